"""The build of rspose-kernels' native module (metadata: pyproject.toml).

The native module ``rspose_kernels._C`` (C++ CPU kernel, hand-written CUDA kernels) is built by
CMakeLists.txt with ninja through the ``build_ext`` below; it links no libtorch, so the build
needs no torch. Environment switches:

  RSPOSE_CUDA=auto|0|1   CUDA kernels when a working nvcc is found (auto, default), never, or
                         always (1 fails loudly without one). Passed to CMake, which alone
                         finds the compiler (CMakeLists.txt: $CUDACXX, $CUDA_HOME/bin,
                         $CUDA_PATH/bin, /usr/local/cuda/bin, PATH) -- never decided from
                         torch. What was built: rspose_kernels._C.build_info().
  RSPOSE_CUDA_ARCHS      CMAKE_CUDA_ARCHITECTURES, default "80;90".
  RSPOSE_BUILD_EXT=auto|0|1
                         Build _C at all: auto builds it when cmake, ninja and pybind11 are
                         present and otherwise installs the pure-Python package with a
                         warning (the package works without _C: backends "torch" and
                         "triton"); 1 requires the build; 0 skips it.
  MAX_JOBS               Parallel compile jobs (default: the CPU count).

Missing *tools* may downgrade to pure Python (auto); a compile error never does: it fails the
install, so a broken kernel cannot slip through CI.
"""
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_choice(name, default="auto"):
    value = os.environ.get(name, default).strip().lower()
    if value in ("1", "on", "true", "yes"):
        return "1"
    if value in ("0", "off", "false", "no"):
        return "0"
    if value == "auto":
        return "auto"
    raise SystemExit(f"{name}: expected auto, 0 or 1, got {os.environ[name]!r}")


def _find_tool(name):
    """cmake / ninja on PATH, or from their PyPI packages (the build requirements)."""
    path = shutil.which(name)
    if path:
        return path
    try:
        mod = __import__(name)
        bindir = getattr(mod, "BIN_DIR", None) or getattr(mod, "CMAKE_BIN_DIR", None)
        if bindir and os.path.isfile(os.path.join(bindir, name)):
            return os.path.join(bindir, name)
    except ImportError:
        pass
    return None


def _pybind11_cmake_dir():
    try:
        import pybind11
    except ImportError:
        return None
    return pybind11.get_cmake_dir()


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def run(self):
        want = _env_choice("RSPOSE_BUILD_EXT")
        cuda = _env_choice("RSPOSE_CUDA")
        if want == "0":
            self._skip("RSPOSE_BUILD_EXT=0")
            return
        missing = [n for n, found in (("cmake", _find_tool("cmake")),
                                      ("ninja", _find_tool("ninja")),
                                      ("pybind11", _pybind11_cmake_dir())) if not found]
        if missing:
            msg = (f"cannot build rspose_kernels._C: {', '.join(missing)} not found "
                   "(pip install cmake ninja pybind11)")
            if want == "1" or cuda == "1":
                raise SystemExit(msg)
            self._skip(msg)
            return
        super().run()

    def _skip(self, why):
        print(f"WARNING: {why}; installing rspose-kernels without its native backends "
              "('cpu', 'cuda'). The 'torch' backend still works.", file=sys.stderr)
        self.extensions = []

    def build_extension(self, ext):
        cmake, ninja = _find_tool("cmake"), _find_tool("ninja")
        out_path = os.path.abspath(self.get_ext_fullpath(ext.name))
        out_dir = os.path.dirname(out_path)
        build_temp = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        os.makedirs(build_temp, exist_ok=True)
        os.makedirs(out_dir, exist_ok=True)

        cuda = {"auto": "AUTO", "1": "ON", "0": "OFF"}[_env_choice("RSPOSE_CUDA")]
        args = [
            f"-S{ROOT}", f"-B{build_temp}", "-GNinja",
            f"-DCMAKE_MAKE_PROGRAM={ninja}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={_pybind11_cmake_dir()}",
            f"-DRSPOSE_OUTPUT_DIR={out_dir}",
            f"-DRSPOSE_CUDA_ARCHS={os.environ.get('RSPOSE_CUDA_ARCHS', '80;90')}",
            # CMake decides whether CUDA is built (and says so in its output); once it is,
            # a CUDA compile error fails the build like any other.
            f"-DRSPOSE_CUDA={cuda}",
        ]
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        print(f"rspose_kernels: building _C (RSPOSE_CUDA={cuda})", file=sys.stderr)
        subprocess.check_call([cmake, *args])
        subprocess.check_call([cmake, "--build", build_temp, "-j", jobs])

        # pybind11 names the module with this interpreter's EXT_SUFFIX, as setuptools does;
        # fail clearly rather than install a module under a name Python will not import.
        if not os.path.isfile(out_path):
            suffix = sysconfig.get_config_var("EXT_SUFFIX")
            raise SystemExit(f"CMake did not produce {out_path} (EXT_SUFFIX {suffix})")


# Metadata (name, version, dependencies, packages) is in pyproject.toml; this file only
# drives the CMake build of the native module.
setup(
    ext_modules=[CMakeExtension("rspose_kernels._C")],
    cmdclass={"build_ext": CMakeBuild},
)
