"""Smoke test of bench/: tiny cases through the benchmark's own code paths, in a few seconds."""
import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

import rspose_kernels as rk
from rspose_kernels.testing import row_case

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"rspose_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod     # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


run = _load("run")
report = _load("report")
loop = _load("rs_loop_baseline")

TINY = run.Policy(warmup=1, reps=2, min_time=0.0, max_time=5.0, max_reps=2,
                  loop_positives=6, loop_pairs=10_000)


@pytest.mark.parametrize("case", ["plain", "ties", "empty_and_full_rows", "sparse_long"])
@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_loop_baseline_matches_torch_backend(case, delta):
    # The baseline must compute the same loss and identity-update gradient as the package.
    scores, labels = row_case(case, seed=7)
    a = scores.clone().requires_grad_(True)
    loop.loop_rank_sort_loss(a, labels, delta=delta).backward()
    b = scores.clone().requires_grad_(True)
    ref = rk.rank_sort_loss(b, labels, delta=delta, backend="torch").loss
    ref.backward()
    got = loop.loop_rank_sort_loss(scores, labels, delta=delta)
    torch.testing.assert_close(got, ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_quantile():
    assert run.quantile([3.0], 0.2) == 3.0
    assert run.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert math.isclose(run.quantile([0.0, 10.0], 0.8), 8.0)


@pytest.mark.parametrize("shape", ["vitpose", "simcc"])
def test_bench_case_rows(shape):
    case = run.make_case(shape, "trained", batch=1, keypoints=2)
    assert case.rows == (4 if shape == "simcc" else 2)
    assert case.pairs > 0
    names = run.providers_for("cpu")
    assert names[0] == "mse" and names[-1] == "rs_loop" and "torch" in names
    assert "triton" not in names          # the interpreter is never timed
    env = run.environment("cpu", "custom", torch.float32)
    rows = run.bench_case(case, names, "cpu", TINY, env)
    assert len(rows) == 3 * len(names)
    for r in rows:
        assert set(run.FIELDS) <= set(r), set(run.FIELDS) - set(r)
        assert r["mode"] in run.MODES
        assert r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert 1 <= r["reps"] <= 2
    by = {(r["provider"], r["mode"]): r for r in rows}
    assert by[("mse", "full")]["ratio_to_mse"] == 1.0
    assert by[("mse", "full")]["pairs_per_s"] == ""
    assert by[("torch", "full")]["pairs_per_s"] > 0
    assert by[("torch", "full")]["peak_mem_mb"] > 0
    assert "extrapolated" in by[("rs_loop", "full")]["note"]
    assert run.format_table(rows).count("\n") == len(names)


def test_main_writes_csv_and_report(tmp_path, capsys):
    out = tmp_path / "results.csv"
    argv = ["--device", "cpu", "--shapes", "vitpose", "--regimes", "init", "--batch", "1",
            "--keypoints", "1", "--providers", "mse,torch", "--repeat", "1", "--csv", str(out),
            "--no-progress"]
    assert run.main(argv) == 0
    printed = capsys.readouterr().out
    assert "vitpose" in printed and "torch" in printed
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == run.FIELDS
    assert {r["provider"] for r in rows} == {"mse", "torch"}
    assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 1
    md = report.report(rows)
    assert "| vitpose | init | 1×1 | torch |" in md
    assert rows[0]["device"] in md
