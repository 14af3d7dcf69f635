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
work_model = _load("work_model")

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


def test_work_model_by_hand():
    # L = 300: NP_cap = max(64, 38) = 64. Rows (n, ñ): (3, 2), empty, (1, 0), (257, 10)
    # beyond the cap (pairwise), (5, 7).
    n, nn = torch.tensor([3, 0, 1, 257, 5]), torch.tensor([2, 290, 0, 10, 7])
    w = work_model.work(n, nn, 300)
    pairs = 3 * 5 + 1 * 1 + 257 * 267 + 5 * 12
    assert {k: v for k, v in w.items() if k != "bucketed_cost"} == {
        "rows": 4, "capped": 1, "positives": 266, "negatives": 19,
        "pairs_a": pairs, "pairs_b": pairs, "sorted": 9,
        # bitonic, padded: n 3 -> 4 (3 stages of 2), n 1 -> nothing, n 5 -> 8 (6 stages of 4)
        "compare_exchanges": 6 + 0 + 24,
        "searches": 9, "search_steps": 2 * 3 + 7 * 4,      # ⌈log2 7⌉, ⌈log2 11⌉
        "pp_pairs": 9 + 1 + 25,
        "bytes": 28 * (2 + 7) + 28 * 3 + 28 * (7 + 11),
    }
    lin = 9 + 2 * math.log2(6) + 1 + 25 + 7 * math.log2(10) + 257 * 267
    assert math.isclose(w["bucketed_cost"], lin, rel_tol=1e-12)
    assert math.isclose(work_model.ratio(w), pairs / lin, rel_tol=1e-12)


def test_work_model_quick_table(capsys):
    assert work_model.main(["--quick", "--shapes", "vitpose,simcc", "--regimes", "trained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["case", "b", "x"] and len(lines) == 4
    for line, shape in zip(lines[1:3], ("vitpose", "simcc")):
        cells = line.split()
        case = run.make_case(shape, "trained", *run.QUICK_SIZES[shape])
        rows = sum(int((t > case.pos_thr).any(1).sum()) for _, t in case.groups)
        assert cells[:4] == [shape, "trained", "{}x{}".format(*run.QUICK_SIZES[shape]),
                             str(rows)], line
        # trained: every negative pruned, so bucketed does the pairwise code's n² pairs too
        assert cells[6] == "0" and cells[-5] == "0" and cells[-1] == "1", line  # Σñ, searches


def test_providers_on_a_gpu_include_both_cuda_algorithms(monkeypatch):
    # Once the cuda backend has the bucketed path, a GPU run times it both ways and by auto.
    from rspose_kernels import dispatch
    monkeypatch.setattr(run.rk, "available_backends", lambda device: ["cuda", "triton", "torch"])
    monkeypatch.setitem(dispatch.ALGORITHMS, "cuda", ("pairwise", "bucketed"))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    triton = dispatch.ALGORITHMS["triton"]
    assert run.providers_for("cuda") == (
        ["mse", "cuda", "cuda/pairwise", "cuda/bucketed", "triton"]
        + ([f"triton/{a}" for a in triton] if len(triton) > 1 else [])
        + ["torch", "torch/pairwise", "torch/bucketed", "rs_loop"])
