"""The CPU kernel's bit clamp (csrc/cpu/finite_step.h) equals the ramp's clamp of
csrc/rank_sort_math.h on every float it can meet: all 2^32 bit patterns but NaN and −0, in a
small C++ program (a few seconds). Skips only when g++ is absent."""
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_clamp01_bits_matches_clamp01_on_every_float(tmp_path):
    exe = tmp_path / "finite_step_test"
    build = subprocess.run(
        ["g++", "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'csrc'}",
         str(ROOT / "tests" / "cpu_step" / "finite_step_test.cpp"), "-o", str(exe)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    m = re.search(r"compared (\d+) patterns, (\d+) mismatches", run.stdout)
    assert run.returncode == 0 and m, run.stdout[-4000:] + run.stderr[-2000:]
    # every pattern but the 2 * (2^23 - 1) NaNs and −0
    assert int(m.group(1)) == 2**32 - 2 * (2**23 - 1) - 1
    assert int(m.group(2)) == 0
