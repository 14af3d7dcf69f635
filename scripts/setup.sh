#!/usr/bin/env bash
# Sets up everything the benchmark and the tests need, from nothing, then installs the package.
# torch is pinned and installed first, alone, so pip never resolves a multi-GB CUDA build here.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet "torch==${RSPOSE_TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install --quiet "triton>=3.6,<3.10" numpy pytest cmake ninja pybind11 setuptools wheel
# No build isolation: the build uses the tools above and never downloads anything (the GPU
# machine has no network). The C++ extension must build (RSPOSE_BUILD_EXT=1); CUDA is
# compiled too when nvcc is found.
RSPOSE_BUILD_EXT=1 "$PY" -m pip install --quiet --no-build-isolation --no-deps -e .
"$PY" -c "import rspose_kernels as rk; print('rspose_kernels', rk.__version__, 'backends on cpu:', rk.available_backends('cpu'))"
