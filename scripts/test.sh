#!/usr/bin/env bash
# The test command: set up from nothing, run the mmpose integration tests in their own venv
# (mmpose needs numpy<2), then the whole suite. Fails if anything fails or is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_mmpose.sh
RSPOSE_REQUIRE_MMPOSE=1 .venv-mmpose/bin/python -m pytest -q tests/test_mmpose.py
# Here the compiled _C and triton must be present: their tests fail rather than skip.
# (test_mmpose.py ran above, where mmpose imports.)
RSPOSE_REQUIRE_NATIVE=1 RSPOSE_REQUIRE_TRITON=1 python3 -m pytest -q tests --ignore=tests/test_mmpose.py
