"""bench/gpu_check.sh without a GPU: every step reports itself unavailable, with the reason,
the script exits 0 and writes its one summary file to $OUT. (Nothing heavy runs: without a GPU
the script builds, tests and benchmarks nothing.)"""
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from bench import cuda_sweep as sweep
from rspose_kernels.backends import cost_model, native, torch_backend

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


# ----------------------------------------------------------------------------- cuda_sweep.py
# Its timing needs a GPU; the rest (arguments, the host-side row counts, the per-call marking
# and the summary lines the next GPU session reads) runs here on CPU tensors.

# Independent of the cuda constants' values, the counts are checked against a model with the
# formula's every term non-zero.
COST = torch_backend.COST


def _rows():
    """Rows of L = 300 (NP_cap 64) with hand-known n and ñ (δ = 0.5, pos_thr 0):
    0: n 60, ñ 150 (negatives at exactly min positive − δ survive; below it, pruned)
    1: empty; 2: n 1, ñ 0; 3: n 65 > NP_cap, ñ 10 (at exactly min − δ);
    4: row 0 with a NaN negative (never pruned: ñ 151, and the row is not finite);
    5: n 2, ñ 0. Every other score is −5 (pruned)."""
    m, length = 6, 300
    s = torch.full((m, length), -5.0)
    y = torch.zeros(m, length)
    s[0, :60], y[0, :60] = torch.linspace(1.0, 2.0, 60), 0.5
    s[0, 100:200], s[0, 200:250], s[0, 250:252] = 0.5, 0.75, 0.4999
    s[2, 0], y[2, 0] = 1.0, 1.0
    s[3, :65], y[3, :65] = 0.0, 0.3
    s[3, 65:75] = -0.5
    s[4], y[4] = s[0], y[0]
    s[4, 260] = math.nan
    s[5, :2], y[5, :2] = 3.0, 1.0
    return s, y, torch.tensor([60, 0, 1, 65, 60, 2]), torch.tensor([150, 0, 0, 10, 151, 0])


def test_sweep_row_counts_on_cpu():
    s, y, n, nn = _rows()
    counts = cost_model.row_counts(s, y, 0.5, 0.0)
    assert counts.n.tolist() == n.tolist() and counts.nn.tolist() == nn.tolist()
    assert native.cuda_max_positives(300, torch.float32) == 64   # max(64, L/8), via _C
    assert sweep.bucketed_rows(s, y, 0.0, "pairwise") == 0
    # forced: every non-empty row whose positives fit and whose scores are finite (0, 2, 5)
    assert sweep.bucketed_rows(s, y, 0.0, "bucketed") == 3
    counts = []
    for per_negative in (1e-3, 1.0, 10.0, 1e6):
        prefers = cost_model.prefers_bucketed(n, nn, COST._replace(per_negative=per_negative))
        expect = int((prefers & torch.tensor([True, False, True, False, False, True])).sum())
        got = sweep.bucketed_rows(s, y, 0.0, "auto", per_negative, cost=COST)
        assert got == expect, (per_negative, got, expect)
        counts.append(got)
    # the per-negative cost decides row 0 (n 60, ñ 150) one way and then the other
    assert counts[0] >= 1 and counts[-1] == 0 and counts == sorted(counts, reverse=True)


def test_threshold_sweep_marks_the_fastest_and_ends_with_the_summary():
    s, y, _, _ = _rows()
    cases = [("rows/a", s, y, 0.0), ("rows/b", s[:3], y[:3], 0.0)]
    seen = []

    def timer(s_, y_, tau, algorithm):
        cost = os.environ.get(sweep.BUCKET_COST_ENV)
        seen.append((algorithm, cost))
        if algorithm != "auto":
            return 5.0 if algorithm == "pairwise" else 3.0
        # fastest auto at cost 4 on case a, at 16 on case b
        best = 4.0 if len(s_) == 6 else 16.0
        return 1.0 + abs(math.log2(float(cost) / best))

    lines = []

    def count(s_, y_, tau, algorithm, per_negative):
        return sweep.bucketed_rows(s_, y_, tau, algorithm, per_negative, cost=COST)

    before = os.environ.get(sweep.BUCKET_COST_ENV)
    results = sweep.threshold_sweep(cases, timer, lambda: False, count, lines.append)
    assert os.environ.get(sweep.BUCKET_COST_ENV) == before       # restored
    assert seen[:2] == [("pairwise", before), ("bucketed", before)]
    assert [c for a, c in seen[2:10]] == [str(c) for c in sweep.BUCKET_COSTS]
    assert list(results) == ["rows/a", "rows/b"]
    marked = [line for line in lines if line.endswith("*")]
    assert [line.split()[:3] for line in marked] == [["auto", "cost=4", "rows/a"],
                                                      ["auto", "cost=16", "rows/b"]]
    assert all(line.split()[-2 if line.endswith("*") else -1].count("/") == 1
               for line in lines[1:])   # bucketed rows k/non-empty
    summary = sweep.threshold_summary(results)
    assert summary[-2] == "best bucket_cost per call: rows/a=4 rows/b=16"
    # geometric-mean slowdown √3 at costs 4 and 16 (2 at 8): the lower wins the tie
    assert summary[-1].startswith("best bucket_cost overall: 4 ")
    assert "rows/a=auto_cost=4" in summary[0]

    # out of time after 3 settings: nothing half-measured is reported
    calls = iter(range(100))
    partial = sweep.threshold_sweep(cases, timer, lambda: next(calls) >= 3, count, lines.append)
    assert partial == {} and lines[-1] == "(deadline: rows/a not measured)"
    assert sweep.threshold_summary({}) == ["best bucket_cost per call: (none measured)"]


def test_sweep_arguments():
    with pytest.raises(SystemExit):
        sweep.main(["--parts", "nothing"])
    with pytest.raises(SystemExit):
        sweep.main(["--reps", "0"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_sweep_without_a_gpu_is_unavailable(capsys):
    assert sweep.main(["--deadline", "1"]) == 3
    assert capsys.readouterr().out.startswith("UNAVAILABLE: ")


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_sweep_step_runs_under_its_limit(tmp_path):
    # The step logic as on a GPU machine, the sweep alone: it gets its limit through
    # RSPOSE_STEP_LIMIT and reports the missing backend as unavailable (not a failure).
    logs = tmp_path / "logs"
    run = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True,
        timeout=120, env={**os.environ, "RSPOSE_CHECK_ASSUME_GPU": "1",
                          "RSPOSE_CHECK_STEPS": "sweep", "RSPOSE_CHECK_LOGDIR": str(logs)})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    log = (logs / "sweep.log").read_text()
    assert log.startswith("== sweep (limit 60s): bash -c sweep"), log
    summary = (logs / "summary.txt").read_text()
    assert "unavailable: the cuda backend is not available here" in summary, summary
