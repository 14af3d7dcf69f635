"""The bucketed algorithm (docs/DESIGN.md §5b, docs/MATH.md) on the `cpu` backend
(csrc/cpu/rank_sort_bucketed_cpu.h) and the `torch` backend (backends/torch_bucketed.py):
what the contract suite (test_backend_contract.py, every backend and algorithm) does not
cover: float64 agreement to rounding, capacity, the rows that must stay pairwise, thread
counts, the `algorithm=` switch and its per-row cost model.

Both twins accumulate in float64, so on float64 inputs they agree with the reference to
rounding (~1e-15 measured; asserted at 1e-12, far inside the 1e-9 of the float64 row of
docs/DESIGN.md §4); float32 inputs use §4's tolerances, the reference summing in float32.
"""
import functools

import pytest
import torch

import rspose_kernels as rk
from rspose_kernels import dispatch
from rspose_kernels.backends import cost_model, torch_backend, torch_bucketed, torch_pairwise
from rspose_kernels.testing import DELTAS, ROW_CASES, heatmap_case, random_rows, row_case
from tests.reference.cases import non_finite_rows
from tests.reference.parity import (
    MODE_DELTAS,
    MODES,
    against_reference,
    assert_parity,
    pairwise_only,
    require,
)

native = require("rspose_kernels.backends.native", "RSPOSE_REQUIRE_NATIVE",
                 "rspose_kernels._C is not built (pip install -e . with cmake, ninja, pybind11)")
OP = torch.ops.rspose_kernels.rank_sort_rows


def cpu_bucketed(*args):
    return native.rank_sort_rows(*args, algorithm="bucketed")


TWINS = {"cpu": cpu_bucketed, "torch": torch_bucketed.rank_sort_rows}
BACKENDS = sorted(TWINS)


def tight(got, want):
    """float64: rounding only."""
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-12, atol=1e-13,
                                   equal_nan=True)


# --- parity ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode,delta", MODE_DELTAS)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_float64_matches_reference(ties, delta, mode, backend):
    # Ties: labels on 4 levels, scores on multiples of 0.5 = every δ of the grid apart, so
    # scores sit exactly on breakpoints s_i ± δ (and x_ij = 0 for the δ = 0 step).
    scores, labels = random_rows(7, 83, seed=1 + ties, pos_frac=0.35, ties=ties, empty_rows=1,
                                 all_pos_rows=1, dtype=torch.float64)
    got, want = against_reference(TWINS[backend], scores, labels, delta, mode[1])
    tight(got, want)
    assert_parity(got, want, torch.float64)


@pytest.mark.parametrize("mode,delta", MODE_DELTAS)
@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_torch_twin_alone_on_every_row(case, delta, mode):
    # torch_bucketed on every row, those its plan would send pairwise included (empty and
    # all-positive rows, L = 1, no rows, sparse long rows, ties); the torch record, which
    # splits the rows, is in test_backend_contract.py.
    scores, labels = row_case(case, seed=4)
    assert_parity(*against_reference(torch_bucketed.rank_sort_rows, scores, labels, delta,
                                     mode[1]), torch.float32)
    for pos_thr in (0.0, 0.4):
        got, want = against_reference(torch_bucketed.rank_sort_rows, scores, labels, delta,
                                      mode[1], pos_thr=pos_thr, need_grad=False)
        assert_parity(got, want, torch.float32, need_grad=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize("regime", ["init", "trained"])
def test_heatmaps_partly_pruned(regime, mode, backend):
    # "trained" lifts the positives: most negatives are pruned, some sit on the ramps.
    heatmaps, targets, _ = heatmap_case(2, 2, 33, 27, 2.5, regime=regime, seed=5, pos_thr=0.0)
    scores, labels = heatmaps.reshape(4, -1), targets.reshape(4, -1)
    got, want = against_reference(TWINS[backend], scores, labels, 0.25, mode[1])
    assert_parity(got, want, torch.float32)
    got64, want64 = against_reference(TWINS[backend], scores.double(), labels, 1.0, mode[1])
    tight(got64, want64)


@functools.lru_cache(maxsize=None)
def _many_positives():
    """A row with one positive and one with 5000, and the reference on them (computed once)."""
    g = torch.Generator().manual_seed(7)
    length = 5200
    scores = torch.randn(2, length, generator=g, dtype=torch.float64)
    labels = torch.zeros(2, length, dtype=torch.float64)
    labels[0, 17] = 0.6                                     # one positive
    labels[1, :5000] = torch.rand(5000, generator=g, dtype=torch.float64) * 0.99 + 0.01
    scores[1, :5000] += 0.3 * labels[1, :5000]              # mildly ordered, many on ramps
    return scores, labels, torch_pairwise.rank_sort_rows(scores, labels, 0.5, 0.0, False, True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_positive_and_5000_positives(backend):
    scores, labels, want = _many_positives()
    got = TWINS[backend](scores, labels, 0.5, 0.0, False, True)
    assert want[2].tolist() == [1, 5000]
    tight(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_rows_go_pairwise(backend):
    # A NaN (negative or positive) or a +inf that pruning keeps sends a row pairwise under
    # "bucketed" too; a -inf that pruning removes (masked pixels) does not. (Their NaN and
    # finite losses on every backend and algorithm: test_backend_contract.py.)
    scores, labels = non_finite_rows()
    plan = dispatch.backend_record(backend).bucketed_plan(scores, labels, 0.5, 0.0, "bucketed")
    assert plan.tolist() == [True, False, False, True, False]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("delta", [1e-14, 1e-16, 1e-30])
def test_delta_below_the_scores_resolution_stays_exact(backend, delta):
    # A band sum divides by 2δ: rows whose δ is below 2^-20·max|s| stay pairwise, even when
    # bucketed is asked for (a 1e-14 δ on O(1) logits gave 1e-3 errors before).
    heatmaps, targets, _ = heatmap_case(2, 3, 24, 16, 2.0, seed=13)
    scores, labels = heatmaps.reshape(6, -1), targets.reshape(6, -1)
    want = torch_pairwise.rank_sort_rows(scores, labels, delta, 0.0, False, True)
    for algorithm in ("auto", "bucketed"):
        got = rk.rank_sort_loss(scores, labels, delta=delta, backend=backend,
                                algorithm=algorithm, reduction="none")
        keep = want[2] > 0
        torch.testing.assert_close(got.rank[keep], want[0][keep], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got.sort[keep], want[1][keep], rtol=1e-4, atol=1e-6)
    plan = torch_backend.bucketed_plan(scores, labels, delta, 0.0, "bucketed")
    assert not plan.any()


@pytest.mark.parametrize("algorithm", ["bogus", "bucketed"])
def test_instance_sort_checks_the_algorithm_before_any_work(algorithm, monkeypatch):
    from rspose_kernels import pose

    def boom(*a, **k):
        raise AssertionError("work ran before the algorithm was checked")

    monkeypatch.setattr(pose, "_max_with_index", boom)
    heatmaps, targets, weight = heatmap_case(2, 3, 8, 6, 1.0, seed=14)
    # "bucketed" is an error on a pairwise-only backend: every backend has both now, so one
    # is stood in.
    pairwise_only(monkeypatch, "torch")
    backend = "torch"
    with pytest.raises(ValueError, match="algorithm"):
        rk.instance_sort_loss(heatmaps, targets, weight, backend=backend, algorithm=algorithm)
    with pytest.raises(ValueError, match="algorithm"):
        pose.simcc_instance_sort_loss((heatmaps[..., 0], heatmaps[..., 0, :]),
                                      (targets[..., 0], targets[..., 0, :]), weight,
                                      backend=backend, algorithm=algorithm)


# --- determinism ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES, ids=[m for m, _ in MODES])
def test_cpu_bucketed_same_bits_for_any_thread_count(mode):
    heatmaps, targets, _ = heatmap_case(2, 5, 40, 32, 3.0, seed=9)
    scores, labels = heatmaps.reshape(10, -1), targets.reshape(10, -1)
    saved = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, max(saved, 4)):
            torch.set_num_threads(threads)
            for _ in range(2):
                results.append(cpu_bucketed(scores, labels, 0.5, 0.0, mode[1], True))
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


HISTOGRAM_WAYS = [pytest.param(device, way, id=f"{device}-{name}")
                  for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
                  for way, name in ((None, "by-device"), (True, "sorted"), (False, "scatter"))
                  if not (device == "cuda" and way is False)]   # scatter: the CPU way only


@pytest.mark.parametrize("device,sorted_histograms", HISTOGRAM_WAYS)
def test_torch_bucketed_histograms_same_bits_run_after_run(device, sorted_histograms,
                                                           monkeypatch):
    # On CUDA the histograms are sorted suffix sums (scatter_add_'s float atomics would not
    # give the same bits); both ways agree to rounding, and each gives the same bits again.
    monkeypatch.setattr(torch_bucketed, "SORTED_HISTOGRAMS", sorted_histograms)
    heatmaps, targets, _ = heatmap_case(2, 5, 40, 32, 3.0, seed=12)
    scores = heatmaps.reshape(10, -1).double().to(device)
    labels = targets.reshape(10, -1).double().to(device)
    for delta, exact in ((0.0, False), (0.5, False), (0.5, True)):
        first = torch_bucketed.rank_sort_rows(scores, labels, delta, 0.0, exact, True)
        for _ in range(2):
            again = torch_bucketed.rank_sort_rows(scores, labels, delta, 0.0, exact, True)
            assert all(torch.equal(a, b) for a, b in zip(first, again))
        tight([t.cpu() for t in first],
              torch_pairwise.rank_sort_rows(scores.cpu(), labels.cpu(), delta, 0.0, exact, True))


def test_torch_bucketed_blocks_do_not_change_the_result(monkeypatch):
    scores, labels = random_rows(6, 50, seed=10, pos_frac=0.5, empty_rows=1,
                                 dtype=torch.float64)
    for exact in (False, True):
        full = torch_bucketed.rank_sort_rows(scores, labels.double(), 0.5, 0.0, exact, True)
        monkeypatch.setattr(torch_bucketed, "PAIR_BUDGET", 40)
        small = torch_bucketed.rank_sort_rows(scores, labels.double(), 0.5, 0.0, exact, True)
        monkeypatch.undo()
        tight(small, full)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scores_near_the_float64_limit_stay_pairwise(backend):
    # |s| ~ 1e306: a band sum's differences of scores would overflow a double; such rows stay
    # pairwise (as in the CUDA kernel), which handles them like any other.
    scores, labels = random_rows(3, 40, seed=21, pos_frac=0.3, dtype=torch.float64)
    scores = scores * 1e306
    want = torch_pairwise.rank_sort_rows(scores, labels.double(), 0.5, 0.0, False, True)
    got = rk.rank_sort_loss(scores, labels, backend=backend, algorithm="bucketed",
                            reduction="none")
    assert torch.isfinite(got.loss).all()
    torch.testing.assert_close(got.rank, want[0], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(got.sort, want[1], rtol=1e-12, atol=1e-13)
    assert not torch_backend.bucketed_plan(scores, labels, 0.5, 0.0, "bucketed").any()
    assert torch_backend.bucketed_plan(scores / 1e306, labels, 0.5, 0.0, "bucketed").all()


# --- through the public API -------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_exact_bucketed(backend):
    scores, labels = random_rows(3, 14, seed=11, pos_frac=0.5, dtype=torch.float64)
    scores.requires_grad_(True)
    torch.autograd.gradcheck(
        lambda s: rk.rank_sort_loss(s, labels, grad_mode="exact", delta=1.0, backend=backend,
                                    algorithm="bucketed").loss, (scores,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grad_mode", ["identity", "exact"])
def test_every_algorithm_same_loss_and_gradient(grad_mode, backend):
    # Rows of very different sizes, so that "auto" sends some of them each way.
    heatmaps, targets, weight = heatmap_case(2, 3, 48, 40, 1.0, seed=12, dtype=torch.float64,
                                             invisible=0.0)
    targets[0, 0] = heatmap_case(1, 1, 48, 40, 6.0, seed=13)[1][0, 0]
    targets[1, 1] = (targets[1, 1] == targets[1, 1].max()).to(targets.dtype)  # one positive
    results = {}
    for algorithm in ("pairwise", "bucketed", "auto"):
        h = heatmaps.clone().requires_grad_(True)
        out = rk.spatial_rs_loss(h, targets, weight, grad_mode=grad_mode, backend=backend,
                                 algorithm=algorithm)
        out.loss.backward()
        results[algorithm] = (out.loss.detach(), out.rank, out.sort, h.grad)
    for algorithm in ("bucketed", "auto"):
        for a, b in zip(results[algorithm], results["pairwise"]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    rows, labels = heatmaps.reshape(6, -1), targets.reshape(6, -1)
    plan = dispatch.backend_record(backend).bucketed_plan(rows, labels, 0.5, 0.0, "auto")
    plan = plan[(labels > 0).any(1)]
    assert plan.any() and not plan.all()        # the per-row choice really splits the batch


def test_algorithm_reaches_every_wrapper():
    heatmaps, targets, weight = heatmap_case(2, 3, 24, 20, 2.0, seed=14)
    for backend in BACKENDS:
        base = {}
        for algorithm in ("pairwise", "bucketed"):
            kw = dict(backend=backend, algorithm=algorithm)
            base[algorithm] = [
                rk.RSPoseLoss(**kw)(heatmaps, targets, weight),
                rk.instance_sort_loss(heatmaps, targets, weight, **kw),
                rk.simcc_rs_loss((heatmaps[..., 0, :], heatmaps[..., 0]),
                                 (targets[..., 0, :], targets[..., 0]), weight, **kw).loss,
            ]
        for a, b in zip(base["bucketed"], base["pairwise"]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_available_algorithms_and_errors(monkeypatch):
    assert rk.available_algorithms("cpu") == ["pairwise", "bucketed"]
    assert rk.available_algorithms("torch") == ["pairwise", "bucketed"]
    assert rk.available_algorithms("auto", "cpu") == ["pairwise", "bucketed"]
    assert rk.available_algorithms("cuda") == ["pairwise", "bucketed"]   # known without a GPU
    with pytest.raises(ValueError, match="backend: expected one of"):
        rk.available_algorithms("tpu")
    scores, labels = random_rows(2, 9, seed=15)
    with pytest.raises(ValueError, match=r"algorithm: expected one of \['auto', 'pairwise', "
                                         r"'bucketed'\], got 'fast'"):
        rk.rank_sort_loss(scores, labels, algorithm="fast")
    with pytest.raises(ValueError, match="algorithm"):
        rk.RSPoseLoss(algorithm="fast")
    if "triton" in rk.available_backends("cpu"):
        assert rk.available_algorithms("triton") == ["pairwise", "bucketed"]
        # A pairwise-only backend (stood in): "bucketed" is an error naming the backend,
        # "auto" is pairwise.
        with monkeypatch.context() as mp:
            pairwise_only(mp, "triton")
            with pytest.raises(ValueError, match="algorithm: 'bucketed' is not implemented by "
                                                 "the 'triton' backend"):
                rk.rank_sort_loss(scores, labels, backend="triton", algorithm="bucketed")
            out = rk.rank_sort_loss(scores, labels, backend="triton", algorithm="auto")
        ref = rk.rank_sort_loss(scores, labels, backend="torch", algorithm="pairwise")
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-4, atol=1e-6)


# --- the cost model ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_cost_model_is_the_same_in_cpp_and_python(backend):
    from rspose_kernels import _C
    cost = native.CPU_COST if backend == "cpu" else native.CUDA_COST
    grid_n = [0, 1, 2, 3, 17, 37, 64, 169, 1000, 1900, 5000]
    grid_nn = [0, 1, 10, 300, 3072, 12288, 49152]
    n = torch.tensor([a for a in grid_n for _ in grid_nn])
    nn = torch.tensor([b for _ in grid_n for b in grid_nn])
    py = cost_model.prefers_bucketed(n, nn, cost).tolist()
    cpp = [_C.prefers_bucketed(a, b, *cost) for a, b in zip(n.tolist(), nn.tolist())]
    assert py == cpp
    assert any(py) and not all(py)
    assert not _C.prefers_bucketed(1, 10 ** 6, *cost)     # one positive: nothing to gain


def test_cuda_cost_model_sends_init_rows_bucketed_and_trained_rows_pairwise():
    # What the CUDA defaults do at the benchmark shapes (unmeasured constants, native.py):
    # the init regime's rows (ñ ≫ n) bucketed, a trained row (ñ ≈ 0, all n² positive pairs
    # left in both paths) pairwise. n, ñ of those rows: 13×13 / 25×25 / 49×49 Gaussian
    # windows.
    cost = native.CUDA_COST
    n = torch.tensor([169, 625, 2401, 37, 169, 2401])
    nn = torch.tensor([3072 - 169, 12288 - 625, 49152 - 2401, 384 - 37, 0, 3])
    assert cost_model.prefers_bucketed(n, nn, cost).tolist() == [True] * 4 + [False] * 2


def test_cuda_cost_override(monkeypatch):
    monkeypatch.delenv("RSPOSE_CUDA_BUCKET_COST", raising=False)
    assert native.cuda_costs() == native.CUDA_COST
    monkeypatch.setenv("RSPOSE_CUDA_BUCKET_COST", "64")
    assert native.cuda_costs() == native.CUDA_COST._replace(per_negative=64.0)
    for bad in ("0", "-1", "inf", "nan", "fast"):
        monkeypatch.setenv("RSPOSE_CUDA_BUCKET_COST", bad)
        with pytest.raises(ValueError, match="RSPOSE_CUDA_BUCKET_COST: expected a positive"):
            native.cuda_costs()


def test_auto_backend_prefers_one_with_the_bucketed_algorithm(monkeypatch):
    # On CUDA tensors, calls that may take the bucketed algorithm go to the first kernel
    # backend that has it; pairwise calls keep AUTO_ORDER. Both GPU backends have it, so
    # auto is triton either way...
    monkeypatch.setattr(dispatch, "available_backends",
                        lambda device="cpu": ["torch", "cuda", "triton"])
    assert dispatch.AUTO_ORDER["cuda"][0] == "triton"
    for algorithm in ("pairwise", "auto", "bucketed"):
        assert dispatch.resolve_backend("auto", "cuda", algorithm) == "triton"
    # ... and with a pairwise-only triton (stood in) bucketed calls would go to cuda. Checked
    # with the device's backend list stood in (no GPU here).
    pairwise_only(monkeypatch, "triton")
    assert dispatch.resolve_backend("auto", "cuda", "pairwise") == "triton"
    assert dispatch.resolve_backend("auto", "cuda", "auto") == "cuda"
    assert dispatch.resolve_backend("auto", "cuda", "bucketed") == "cuda"
    assert dispatch.resolve_backend("triton", "cuda", "auto") == "triton"   # asked by name
    assert rk.available_algorithms("auto", "cuda") == ["pairwise", "bucketed"]
    monkeypatch.setattr(dispatch, "available_backends",
                        lambda device="cpu": ["torch", "triton"])
    assert dispatch.resolve_backend("auto", "cuda", "auto") == "triton"   # not the reference


def test_auto_follows_the_cost_model(monkeypatch):
    # With a cost model that never prefers bucketed, "auto" is pairwise bit for bit.
    heatmaps, targets, _ = heatmap_case(1, 4, 30, 30, 3.0, seed=17)
    rows, labels = heatmaps.reshape(4, -1), targets.reshape(4, -1)
    pairwise = native.rank_sort_rows(rows, labels, 0.5, 0.0, False, True)
    bucketed = native.rank_sort_rows(rows, labels, 0.5, 0.0, False, True, algorithm="bucketed")
    assert not torch.equal(pairwise[3], bucketed[3])     # the two sum in different orders
    monkeypatch.setattr(native, "CPU_COST", cost_model.CostModel(1e9, 1e9, 0.0))
    auto = native.rank_sort_rows(rows, labels, 0.5, 0.0, False, True, algorithm="auto")
    for a, b in zip(auto, pairwise):
        assert torch.equal(a, b)
    monkeypatch.setattr(native, "CPU_COST", cost_model.CostModel(0.0, 0.0, 1.0))
    auto = native.rank_sort_rows(rows, labels, 0.5, 0.0, False, True, algorithm="auto")
    for a, b in zip(auto, bucketed):
        assert torch.equal(a, b)


def test_deltas_grid_is_the_issue_grid():
    assert DELTAS == (0.0, 0.25, 0.5, 1.0)
