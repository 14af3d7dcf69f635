"""Smoke test of bench/: tiny cases through the benchmark's own code paths, in a few seconds."""
import csv
import math

import pytest
import torch

import rspose_kernels as rk
from bench import calibrate, providers, report, run, work_model
from bench import rs_loop_baseline as loop
from bench.cases import QUICK_SIZES, make_case
from bench.harness.provenance import environment
from bench.harness.results import FIELDS, MODES, format_ms, format_table, quantile
from bench.harness.timing import Policy
from rspose_kernels import dispatch
from rspose_kernels.testing import row_case

TINY = Policy(warmup=1, min_time=0.0, max_time=0.0, loop_positives=6, loop_pairs=10_000)


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


def test_quantile_and_the_one_ms_format():
    assert quantile([3.0], 0.2) == 3.0
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert math.isclose(quantile([0.0, 10.0], 0.8), 8.0)
    assert [format_ms(v) for v in (0.1234, 9.23, 40.84, 304.4, 2851.0, 10461.0)] == [
        "0.123 ms", "9.2 ms", "40.8 ms", "304 ms", "2.85 s", "10.46 s"]
    assert format_ms(40.84, unit=False) == "40.8" and format_ms(2851.0, False) == "2.85s"


@pytest.mark.parametrize("shape", ["vitpose", "simcc"])
def test_bench_case_rows(shape):
    case = make_case(shape, "trained", batch=1, keypoints=2)
    assert case.rows == (4 if shape == "simcc" else 2)
    assert case.pairs > 0
    names = providers.providers_for("cpu")
    assert names[0] == "mse" and names[-1] == "rs_loop" and "torch" in names
    assert "triton" not in names          # the interpreter is never timed
    env = environment("cpu", "custom", torch.float32)
    rows = run.bench_case(case, names, "cpu", TINY, env)
    assert len(rows) == 3 * len(names)
    for r in rows:
        assert set(FIELDS) <= set(r), set(FIELDS) - set(r)
        assert r["mode"] in MODES
        assert r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert r["reps"] >= 1          # one timed block (of one or more runs)
    by = {(r["provider"], r["mode"]): r for r in rows}
    assert by[("mse", "full")]["ratio_to_mse"] == 1.0
    assert by[("mse", "full")]["pairs_per_s"] == ""
    assert by[("torch", "full")]["pairs_per_s"] > 0
    assert by[("torch", "full")]["peak_mem_mb"] > 0
    assert "extrapolated" in by[("rs_loop", "full")]["note"]
    assert format_table(rows).count("\n") == len(names)


def test_main_writes_csv_and_report(tmp_path, capsys):
    out = tmp_path / "results.csv"
    argv = ["--device", "cpu", "--shapes", "vitpose", "--regimes", "init", "--batch", "1",
            "--keypoints", "1", "--providers", "mse,torch", "--min-time", "0", "--csv", str(out),
            "--no-progress"]
    assert run.main(argv) == 0
    printed = capsys.readouterr().out
    assert "vitpose" in printed and "torch" in printed
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == FIELDS
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
        case = make_case(shape, "trained", *QUICK_SIZES[shape])
        rows = sum(int((t > case.pos_thr).any(1).sum()) for _, t in case.groups)
        assert cells[:4] == [shape, "trained", "{}x{}".format(*QUICK_SIZES[shape]),
                             str(rows)], line
        # trained: every negative pruned, so bucketed does the pairwise code's n² pairs too
        assert cells[6] == "0" and cells[-5] == "0" and cells[-1] == "1", line  # Σñ, searches


def test_providers_on_a_gpu_include_both_cuda_algorithms(monkeypatch):
    # A GPU run times every backend by auto and, where it has two algorithms, both forced.
    real = dispatch.backend_record

    def record(name):
        rec = real(name) or real("torch")
        return dispatch.Backend(name, ("cuda",), ("pairwise", "bucketed"),
                                lambda device_type: True, rec.rank_sort_rows, rec.bucketed_plan)
    monkeypatch.setattr(dispatch, "backend_record", record)
    monkeypatch.setattr(providers.rk, "available_backends", lambda device: ["cuda", "triton",
                                                                            "torch"])
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert providers.providers_for("cuda") == (
        ["mse", "cuda", "cuda/pairwise", "cuda/bucketed", "triton", "triton/pairwise",
         "triton/bucketed", "torch", "torch/pairwise", "torch/bucketed", "rs_loop"])


def test_calibrate_recovers_known_constants():
    # Times made from a known model: the fit over them gives its constants back.
    e, pi, pi_p, kn, kp = 1e-6, 2e-6, 3e-6, 1e-5, 4e-5
    works = {}
    rows = []
    for i in range(5):
        key = ("vitpose", f"r{i}", 1, 1, 0.5)
        w = {"elements": 1e5 * (i + 1), "neg_pairs": 1e6 * (5 - i) ** 2, "pos_pairs": 1e4 * i,
             "neg_steps": 1e5 * (i + 2), "pos_steps": 2e3 * (i + 1) ** 2}
        works[key] = w
        tp = e * w["elements"] + pi * w["neg_pairs"] + pi_p * w["pos_pairs"]
        tb = e * w["elements"] + kn * w["neg_steps"] + kp * w["pos_steps"]
        for prov, t in (("cpu/pairwise", tp), ("cpu/bucketed", tb)):
            rows.append(dict(shape=key[0], regime=key[1], batch="1", keypoints="1",
                             pos_thr="0.5", provider=prov, mode="full", median_ms=str(t)))
    assert calibrate.fitted_backends(rows) == ["cpu"]
    model, line = calibrate.fit(rows, "cpu", lambda key, prunes: works[key])
    assert model is not None, line
    assert math.isclose(model.per_negative, kn / pi, rel_tol=1e-2)
    assert math.isclose(model.per_positive, kp / pi, rel_tol=1e-2)
    assert math.isclose(model.positive_pairs, pi_p / pi, rel_tol=1e-2)
    assert calibrate.fit(rows[:4], "cpu")[0] is None     # two cases do not determine it


def test_work_terms_count_pruned_negatives():
    s = torch.tensor([[2.0, 1.0, 0.8, -3.0, 0.6]])
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0]])
    # positives 2.0, 0.6 (n 2); negatives not below 0.6 - 0.5: 1.0, 0.8 (ñ 2; all: 3)
    w = calibrate.work_terms(s, y, 0.5)
    assert (w["elements"], w["neg_pairs"], w["pos_pairs"]) == (5.0, 4.0, 4.0)
    assert (w["neg_steps"], w["pos_steps"]) == (4.0, 4.0)          # log2(4) = 2 steps
    assert calibrate.work_terms(s, y, 0.5, prunes=False)["neg_pairs"] == 6.0


def test_readme_sections_are_generated(tmp_path):
    log = tmp_path / "pytest.log"
    log.write_text("....\n===== 719 passed, 18 skipped, 3 warnings in 540.12s (0:09:00) =====\n")
    tests = tmp_path / "test_runs.csv"
    row = report.record_tests(log, 709.6, "bash .ci/run", "from a clean clone", tests,
                              commit="3916824", machine="AMD EPYC (2 cpus)")
    assert (row["passed"], row["skipped"], row["failed"], row["seconds"]) == (719, 18, 0, 710)
    with pytest.raises(ValueError):
        report.parse_pytest_summary("no summary here")
    line = report.readme_tests(report.load_csv(tests))
    assert "12 min from nothing (710 s), 719 passed, 18 skipped" in line
    text = ("a\n<!-- generated: bench.report tests -->\nold\n  <!-- /generated -->\nb\n"
            "<!-- generated: bench.report perf -->\nold\n<!-- /generated -->\n")
    new = report.render(text, {"tests": "T", "perf": "P"})
    assert new == ("a\n<!-- generated: bench.report tests -->\nT\n  <!-- /generated -->\nb\n"
                   "<!-- generated: bench.report perf -->\nP\n<!-- /generated -->\n")
    assert report.render(new, {"tests": "T", "perf": "P"}) == new


def test_readme_is_current():
    # README.md's generated sections are what bench.report makes of the committed CSVs.
    assert report.main(["--check-readme"]) == 0


def test_quick_policy_times_fwd_bwd_only_and_the_table_says_so():
    # bench.run --quick on a CPU: fwd+bwd alone, single calls (bench/harness/timing.py).
    from bench.harness.timing import POLICIES, time_modes
    quick = POLICIES[("cpu", "quick")]
    assert quick.modes == ("full",) and quick.single_calls
    case = make_case("vitpose", "trained", batch=1, keypoints=1)
    prov = providers.make_provider(case, "mse", "cpu", quick)
    times, _ = time_modes(prov.fn, prov.leaves, "cpu", quick)
    assert list(times) == ["full"] and len(times["full"]) >= 3
    assert all(t > 0 for t in times["full"])
    env = environment("cpu", "quick", torch.float32)
    rows = run.bench_case(case, ["mse"], "cpu", quick, env)
    assert [r["mode"] for r in rows] == ["full"]
    line = format_table(rows, header=False)
    assert line.split()[4:6] == ["-", "-"], line


def test_work_model_lane_use_counts_tile_slots():
    # One row of 20 positives and 100 kept negatives at L = 3072 (the heatmap tiles):
    # Triton A 32 × (128 + 24) (the half block, 32 against tiles of 64 negatives, as it pads
    # less than 64 × (128 + 24); a_pp 8), Triton B 128 × 24 + 32 × 24 (tiles of 8 positives),
    # CUDA A 24 × (128 + 32) (3 warps of 8 positives), CUDA B (128 + 32) × 20 (the last item's
    # 4 and 1 slot rows of 32); an empty row counts nothing.
    n, nn = torch.tensor([20, 0]), torch.tensor([100, 7])
    use = work_model.lane_use(n, nn, 3072)
    assert use["real"] == 20 * 120
    assert use["triton_a"] == 32 * (128 + 24)
    assert use["triton_b"] == 128 * 24 + 32 * 24
    assert use["cuda_a"] == 24 * (128 + 32)
    assert use["cuda_b"] == (128 + 32) * 20
    assert work_model.lane_use(torch.tensor([300]), torch.tensor([600]), 3072)["cuda_b"] == (
        (512 + 32 * 4) + (256 + 32 * 2)) * 300      # 600 = 2 · 256 + 88, 300 = 256 + 44
    lines = work_model.lanes_markdown([dict(use, shape="vitpose", regime="init")])
    assert lines[2].startswith("| vitpose init | 49 % **<½** |"), lines[2]


def test_calibrate_fits_several_runs_together(tmp_path, monkeypatch, capsys):
    # --run A,B hands the rows of both runs (and only theirs) to one fit; an unknown id fails.
    from bench.harness.results import append_csv
    base = dict(date="2026-12-03", run="cputime", device="cpu-x", mode="full", pos_thr="0.5",
                provider="cpu/pairwise", shape="vitpose", regime="init", median_ms="1")
    path = tmp_path / "results.csv"
    append_csv(path, [dict(base, run_id=rid) for rid in ("A", "B", "C")])
    seen = []
    monkeypatch.setattr(calibrate, "report", lambda rows, backends=None: seen.append(rows) or [])
    assert calibrate.main(["--csv", str(path), "--run", "A,B"]) == 0
    assert sorted(r["run_id"] for r in seen[0]) == ["A", "B"]
    assert "# run A" in capsys.readouterr().out
    assert calibrate.main(["--csv", str(path), "--run", "A,Z"]) == 1
