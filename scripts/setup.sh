#!/usr/bin/env bash
# Sets up everything the benchmark and the tests need, from nothing, then installs the package,
# into the interpreter that `python3` is (system, or an activated venv / conda env; PYTHON
# overrides). torch is pinned and installed first, alone, so pip never resolves a multi-GB
# CUDA build here.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
cd "$(dirname "$0")/.."
. scripts/steps.sh
PY=${PYTHON:-python3}
torch_pin="torch==${RSPOSE_TORCH_VERSION:-2.13.0}"

if ! "$PY" -c "import torch" 2>/dev/null; then
    step "setup: install $torch_pin" \
        "Installing it first keeps pip from resolving a CUDA build; set RSPOSE_TORCH_VERSION to a version pip can find, or install torch yourself first." \
        "$PY" -m pip install --quiet "$torch_pin"
fi
# pycocotools, scipy, tqdm: bench/train.py (COCO evaluator, Spearman correlation, progress).
step "setup: install triton, test and build tools" \
    "These come from the package registry (triton>=3.6,<3.10, numpy, pytest, cmake, ninja, pybind11, pycocotools, scipy, tqdm); the pip output above names the one that failed." \
    "$PY" -m pip install --quiet "triton>=3.6,<3.10" numpy pytest cmake ninja pybind11 setuptools wheel \
        pycocotools scipy tqdm
# No build isolation: the build uses the tools above and never downloads anything (the GPU
# machine has no network). The C++ extension must build (RSPOSE_BUILD_EXT=1); CUDA is
# compiled too when CMake finds a working nvcc (RSPOSE_CUDA=auto; 1 requires it, 0 skips it).
step "setup: build and install rspose_kernels (C++/CUDA extension)" \
    "A compile error above is a bug in csrc/ (built with -Werror, CUDA too when CMake finds nvcc; RSPOSE_CUDA=0 builds the C++ CPU kernel only, RSPOSE_CUDA=1 makes a missing nvcc an error)." \
    env RSPOSE_BUILD_EXT=1 "$PY" -m pip install --quiet --no-build-isolation --no-deps -e .
"$PY" -c "import rspose_kernels as rk; from rspose_kernels import _C; print('rspose_kernels', rk.__version__, 'backends on cpu:', rk.available_backends('cpu'), '_C:', _C.build_info())"
