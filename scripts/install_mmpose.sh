#!/usr/bin/env bash
# A virtual environment with mmpose 1.3.2 beside the system torch, for tests/test_mmpose.py.
#
#   bash scripts/install_mmpose.sh            # ~1 min: mmpose + mmengine + mmcv-lite
#   MMPOSE_FULL_MMCV=1 bash scripts/install_mmpose.sh   # + mmcv 2.1.0 built from source (slow)
#   RSPOSE_REQUIRE_MMPOSE=1 .venv-mmpose/bin/python -m pytest -q tests/test_mmpose.py
#
# Why a venv: mmpose 1.3.2's xtcocotools (and the opencv that works with it) need numpy<2;
# the venv shadows numpy only for itself (--system-site-packages keeps the installed torch and
# rspose_kernels visible). torch is pinned to the installed version, never re-downloaded.
# Not installed on purpose: torchvision -- PyPI's wheels are CUDA builds whose ops do not load
# with a CPU torch, and mmpose needs it only for visualisation.
# mmcv-lite is enough for mmpose.registry (registering, configs); mmpose.models (building a
# head through MODELS) needs mmcv's compiled ops: PyPI has only mmcv's source, and building it
# on 2 cores takes tens of minutes (MMPOSE_FULL_MMCV=1; needs g++).
set -euo pipefail

VENV=${MMPOSE_VENV:-.venv-mmpose}
PY=${PYTHON:-python3}
start=$(date +%s)

torch_version=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
"$PY" -m venv --system-site-packages "$VENV"
pin=$(mktemp)
trap 'rm -f "$pin"' EXIT
echo "torch==${torch_version}" > "$pin"

pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$pin")
"${pip[@]}" "numpy<2" "mmengine==0.10.7" "mmcv-lite==2.1.0" \
    chumpy json-tricks matplotlib munkres opencv-python pillow scipy "xtcocotools>=1.12" \
    pycocotools shapely terminaltables tqdm six
# --no-deps: their torchvision requirement would bring a CUDA torchvision (see above).
"${pip[@]}" --no-deps "mmpose==1.3.2" "mmdet==3.2.0"

if [ "${MMPOSE_FULL_MMCV:-0}" = "1" ]; then
    # mmcv's setup.py imports pkg_resources (gone from setuptools >= 81); torch's C++
    # extension builder wants setuptools >= 77. Full mmcv replaces mmcv-lite (same package).
    "${pip[@]}" "setuptools>=77,<81"
    "$VENV/bin/python" -m pip uninstall --quiet --yes mmcv-lite
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "${pip[@]}" --no-build-isolation --no-deps "mmcv==2.1.0"
fi

"$VENV/bin/python" -c "import mmpose.registry, numpy; print('mmpose', mmpose.__version__, \
'with numpy', numpy.__version__)"
echo "install_mmpose.sh: $VENV ready in $(( $(date +%s) - start )) s"
