"""The CUDA kernels run without a GPU: tests/cuda_emu/emu_test.cpp compiles csrc/cuda's real
kernels and launch sequence with g++ against a host emulation of the CUDA execution model
(tests/cuda_emu/shim) and compares every output with the CPU kernel. It checks the kernels'
logic, barrier placement, warp exchanges, grid-stride loops and launch configurations; races,
memory errors and timing need a GPU (compute-sanitizer). Skips only when g++ is absent.
"""
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EMU = ROOT / "tests" / "cuda_emu"
SUMMARY = re.compile(r"^emulated (\d+) cases, (\d+) CTAs, (\d+) values compared, (\d+) split "
                     r"launches, (\d+) bucketed rows: (\d+) mismatches$", re.M)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_cuda_kernels_emulated_match_cpu(tmp_path):
    exe = tmp_path / "emu_test"
    build = subprocess.run(
        ["g++", "-std=c++20", "-O2", "-Wall", "-Wextra", "-Werror",
         "-Wno-unknown-pragmas",  # #pragma unroll / omp simd, meaningless here
         f"-I{ROOT / 'csrc'}", f"-I{EMU / 'shim'}", str(EMU / "emu_test.cpp"),
         str(ROOT / "csrc" / "cpu" / "rank_sort_cpu.cpp"), "-pthread", "-o", str(exe)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-6000:]

    # A kernel that never finishes would hang here, hence the timeout (the run takes ~55 s).
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    m = SUMMARY.search(run.stdout)
    assert m, out[-6000:]
    cases, ctas, values, splits, bucketed, mismatches = map(int, m.groups())
    assert mismatches == 0, out[-6000:]
    # Not vacuous: every case ran, on many CTAs, compared every output, and the split pass B
    # (rows' positives over several warps, then the finish kernel) ran in several cases.
    assert cases >= 60 and ctas >= 2000 and values >= 100000 and splits >= 5, m.group(0)
    assert len(re.findall(r": ok$", run.stdout, re.M)) == cases, out[-6000:]
    # The bucketed kernels (csrc/cuda/rank_sort_bucketed_kernels.cuh) ran: forced in every
    # case, chosen per row by the device under auto, in every mode and dtype.
    assert bucketed >= 500, m.group(0)
    for what in ("identity bucketed", "exact bucketed", "identity auto", "exact auto"):
        assert re.search(rf"{what} \([1-9]\d* bucketed\).*: ok$", run.stdout, re.M), what
    for dt in ("f32", "f64", "f16", "bf16"):
        assert re.search(rf"^\S.* {dt} .* bucketed \([1-9]\d* bucketed\).*: ok$", run.stdout,
                         re.M), dt
