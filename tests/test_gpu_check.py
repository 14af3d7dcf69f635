"""bench/gpu_check.sh without a GPU: every step reports itself unavailable, with the reason,
the script exits 0 and writes its one summary file to $OUT. (Nothing heavy runs: without a GPU
the script builds, tests and benchmarks nothing.)"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("env build backends test_cuda test_triton test_other memcheck racecheck sweep "
         "bench").split()


def _dry_run(tmp_path, **env):
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True,
        timeout=120, env={**os.environ, "OUT": str(out),
                          "RSPOSE_CHECK_LOGDIR": str(tmp_path / "logs"), **env})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check_summary.txt"]
    summary = (out / "gpu_check_summary.txt").read_text()
    table = {line.split()[0]: line for line in summary.splitlines()[3:3 + len(STEPS)]}
    assert list(table) == STEPS, summary
    return table, summary


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_dry_run_reports_every_step_unavailable(tmp_path):
    table, summary = _dry_run(tmp_path, RSPOSE_CHECK_DRY_RUN="1")
    for step, line in table.items():
        assert "unavailable: dry run (RSPOSE_CHECK_DRY_RUN=1)" in line, line
    assert "no failures" in summary


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU may be present")
def test_without_a_gpu_every_step_is_unavailable(tmp_path):
    table, _ = _dry_run(tmp_path)
    for line in table.values():
        assert "unavailable: no GPU" in line, line
