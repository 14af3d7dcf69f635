#!/usr/bin/env bash
# A virtual environment with mmpose 1.3.2 for tests/test_mmpose.py, layered over the main
# environment (the interpreter that runs this script: the system python3, or an activated
# venv / conda env).
#
#   bash scripts/install_mmpose.sh            # ~30 s: mmpose + mmengine + mmcv-lite + numpy<2
#   MMPOSE_FULL_MMCV=1 bash scripts/install_mmpose.sh   # + mmcv 2.1.0 built from source (slow)
#   RSPOSE_REQUIRE_MMPOSE=1 .venv-mmpose/bin/python -m pytest -q tests/test_mmpose.py
#
# Why a venv: mmpose 1.3.2 (and its opencv) need numpy<2; the venv shadows numpy only for
# itself. It is made WITHOUT --system-site-packages (that option exposes the *base*
# interpreter's site-packages, not an activated venv's); instead a .pth file appends the main
# environment's site-packages after the venv's own, so the venv sees the very torch, triton,
# pytest and (editable) rspose_kernels the main environment has -- never a second torch --
# while its own numpy<2 wins. torch is also pinned by a constraint, in case anything asks.
# Installed: only what `import mmpose.registry` / `mmpose.models` and mmengine's Config
# import. Not installed on purpose: torchvision (PyPI's wheels are CUDA builds whose ops do
# not load with a CPU torch; mmpose needs it only for visualisation), chumpy (nothing on these
# paths imports it, and its setup.py imports pip, which fails under build isolation),
# json-tricks, matplotlib, shapely, terminaltables (nothing the tests reach imports them).
# mmpose.models imports xtcocotools, munkres, scipy and six at import time, so those are here
# (scipy built for numpy<2; the main environment's may need numpy 2).
# mmcv-lite is enough for mmpose.registry (registering, configs); mmpose.models (building a
# head through MODELS) needs mmcv's compiled ops: PyPI has only mmcv's source, and building it
# on 2 cores takes tens of minutes (MMPOSE_FULL_MMCV=1; needs g++). tests/test_mmpose.py
# stands in a tiny mmcv._ext for that.
set -euo pipefail

VENV=${MMPOSE_VENV:-.venv-mmpose}
PY=${PYTHON:-python3}
start=$(date +%s)

# The main environment: its torch version and every site-packages directory it reads
# (a venv's own; the base's too when that venv has system site packages; the user site).
if ! torch_version=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])"); then
    echo "install_mmpose.sh: torch does not import in $PY -- run scripts/setup.sh first" >&2
    exit 1
fi
main_sites=$("$PY" - <<'EOF'
import os, site
dirs = list(site.getsitepackages())
if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
    dirs.append(site.getusersitepackages())
print("\n".join(d for d in dirs if os.path.isdir(d)))
EOF
)

"$PY" -m venv --clear "$VENV"
vpy="$VENV/bin/python"
venv_site=$("$vpy" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# site processes .pth files after adding the venv's own directory, so these come after it.
{
    echo "# scripts/install_mmpose.sh: the main environment, after this venv's own packages"
    while IFS= read -r d; do
        [ -n "$d" ] && printf 'import site; site.addsitedir(%s)\n' "'$d'"
    done <<< "$main_sites"
} > "$venv_site/zz_rspose_main_env.pth"

pin=$(mktemp)
trap 'rm -f "$pin"' EXIT
echo "torch==${torch_version}" > "$pin"

pip=("$vpy" -m pip install --quiet --disable-pip-version-check -c "$pin")
"${pip[@]}" "numpy<2" "mmengine==0.10.7" "mmcv-lite==2.1.0" "xtcocotools>=1.12" munkres \
    scipy six
# --no-deps: their torchvision requirement would bring a CUDA torchvision (see above), and
# the requirements named above are not imported by anything the tests reach.
"${pip[@]}" --no-deps "mmpose==1.3.2" "mmdet==3.2.0"

if [ "${MMPOSE_FULL_MMCV:-0}" = "1" ]; then
    # mmcv's setup.py imports pkg_resources (gone from setuptools >= 81); torch's C++
    # extension builder wants setuptools >= 77. Full mmcv replaces mmcv-lite (same package).
    "${pip[@]}" "setuptools>=77,<81"
    "$vpy" -m pip uninstall --quiet --yes mmcv-lite
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "${pip[@]}" --no-build-isolation --no-deps "mmcv==2.1.0"
fi

"$vpy" - "$torch_version" <<'EOF'
import sys
import mmpose.registry, numpy, torch, rspose_kernels
assert numpy.__version__.startswith("1."), f"numpy {numpy.__version__}: expected the venv's numpy<2"
assert torch.__version__.split("+")[0] == sys.argv[1], "a second torch in the mmpose venv"
print("mmpose", mmpose.__version__, "with numpy", numpy.__version__, "and the main torch",
      torch.__version__, "from", torch.__file__.rsplit("/torch/", 1)[0])
EOF
echo "install_mmpose.sh: $VENV ready in $(( $(date +%s) - start )) s"
