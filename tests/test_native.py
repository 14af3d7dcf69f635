"""What is specific to the native backends (`cpu`: csrc/cpu, `cuda`: csrc/cuda, through
rspose_kernels._C); the contract every backend keeps is tested by test_backend_contract.py.

Everything skips when ``_C`` was not built; the "cuda" parametrisations skip without a GPU or
without CUDA compiled into ``_C``. The shapes include lengths and positive counts on both
sides of every kernel block size (CPU: 64 positives / 256 elements per item; CUDA: 32 or 64
positives per pass-A CTA, 256-element tiles, 1024 elements per pass-B CTA, 256-positive
tiles), so ragged last blocks and multi-block rows run on CPU and GPU alike.
"""

import pytest
import torch

import rspose_kernels as rk
from rspose_kernels.backends import accumulation_dtype, torch_pairwise
from rspose_kernels.dispatch import resolve_backend
from rspose_kernels.testing import heatmap_case, random_rows, shape_case
from tests.reference.parity import (
    MODES,
    against_reference,
    assert_parity,
    device_params,
    require,
)

native = require("rspose_kernels.backends.native", "RSPOSE_REQUIRE_NATIVE",
                 "rspose_kernels._C is not built (pip install -e . with cmake, ninja, pybind11)")

CUDA_OK = torch.cuda.is_available() and native.is_available("cuda")
DEVICES = device_params(True, "", CUDA_OK, "rspose_kernels._C was built without CUDA")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def both(scores, labels, delta, exact, **kw):
    return against_reference(native.rank_sort_rows, scores, labels, delta, exact, **kw)


# --- parity with the torch reference ----------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dtypes_across_blocks_match_torch(dtype, mode, device):
    # Every dtype on rows longer than a CPU item (256 elements) with ~90 positives (more
    # than a 64-positive block); small rows of every backend: test_backend_contract.py.
    scores, labels = random_rows(7, 301, seed=5, pos_frac=0.3, ties=True, empty_rows=1,
                                 all_pos_rows=1, dtype=dtype, device=device)
    assert_parity(*both(scores, labels, 0.5, mode[1]), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("length", [2, 3, 31, 33, 63, 65, 255, 257, 1023, 1025, 1500])
def test_odd_lengths_match_torch(length, device):
    # Positive counts from ~1 to ~750 cross every positive-block size; the all-positive row
    # has `length` positives.
    scores, labels = random_rows(4, length, seed=length, pos_frac=0.5, empty_rows=1,
                                 all_pos_rows=1, device=device)
    for delta, exact in ((0.0, False), (0.5, False), (0.25, True)):
        assert_parity(*both(scores, labels, delta, exact), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize("regime", ["init", "trained"])
def test_heatmaps_match_torch(regime, mode, device):
    # mmpose-style targets; "trained" makes most negatives prunable (tile pruning runs).
    heatmaps, targets, _ = heatmap_case(2, 3, 40, 30, 2.0, regime=regime, seed=7,
                                        device=device, pos_thr=0.0)
    scores, labels = heatmaps.reshape(6, -1), targets.reshape(6, -1)
    for delta in (0.25, 1.0):
        assert_parity(*both(scores, labels, delta, mode[1]), torch.float32)


class _KernelSpy:
    """Stands in for ``_C``: records the arguments of each kernel entry point, then runs it."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __getattr__(self, name):
        fn = getattr(self.real, name)
        if not name.startswith("rank_sort_"):
            return fn

        def call(*args):
            self.calls.append((name, args))
            return fn(*args)
        return call


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES, ids=[m for m, _ in MODES])
def test_without_gradient(mode, device, monkeypatch):
    scores, labels = random_rows(5, 90, seed=9, pos_frac=0.3, empty_rows=1, device=device)
    spy = _KernelSpy(native._C)
    monkeypatch.setattr(native, "_C", spy)
    got, want = both(scores, labels, 0.5, mode[1], need_grad=False)
    assert_parity(got, want, torch.float32, need_grad=False)
    # The kernel was told to skip pass B and had no gradient buffer it could write to
    # (the call's _C.RankSortParams: need_grad and the gradient's pointer).
    ((name, (params,)),) = spy.calls
    assert name == f"rank_sort_{device}" and params.need_grad is False and params.grad == 0
    both(scores, labels, 0.5, mode[1], need_grad=True)
    params = spy.calls[1][1][0]
    assert params.need_grad is True and params.grad != 0


@pytest.mark.parametrize("device", DEVICES)
def test_large_scores_and_wide_delta(device):
    # Scores spread over ±1e3 (most pairs saturate) and a δ wider than the spread.
    scores, labels = random_rows(4, 200, seed=10, pos_frac=0.2, scale=1e3, device=device)
    for delta in (0.5, 1e4):
        for exact in (False, True):
            assert_parity(*both(scores, labels, delta, exact), torch.float32)


# --- through the public API ---------------------------------------------------------------

def test_auto_takes_cpu_when_built():
    assert "cpu" in rk.available_backends("cpu")
    assert resolve_backend("auto", "cpu") == "cpu"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grad_mode", ["identity", "exact"])
def test_public_api_matches_torch(grad_mode, device):
    backend = "cpu" if device == "cpu" else "cuda"
    base, labels = random_rows(6, 80, seed=12, pos_frac=0.3, empty_rows=1, dtype=torch.float64,
                               device=device)
    weight = torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0, 3.0], dtype=torch.float64, device=device)
    grads, losses = [], []
    for name in (backend, "torch"):
        scores = base.reshape(2, 3, 80).transpose(0, 1).detach().clone().requires_grad_(True)
        out = rk.rank_sort_loss(scores, labels.reshape(2, 3, 80).transpose(0, 1),
                                weight=weight.reshape(2, 3).t(), grad_mode=grad_mode,
                                backend=name)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(scores.grad)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_gradcheck_exact_float64():
    scores, labels = random_rows(3, 12, seed=13, pos_frac=0.5, dtype=torch.float64)
    scores.requires_grad_(True)
    torch.autograd.gradcheck(
        lambda s: rk.rank_sort_loss(s, labels, grad_mode="exact", delta=1.0,
                                    backend="cpu").loss, (scores,))


# --- determinism ----------------------------------------------------------------------------

def _big_case(device):
    # Enough rows, positives and elements that the work splits into many items / CTAs.
    heatmaps, targets, _ = heatmap_case(2, 5, 48, 40, 3.0, seed=14, device=device)
    return heatmaps.reshape(10, -1), targets.reshape(10, -1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES, ids=[m for m, _ in MODES])
def test_bitwise_deterministic_when_the_work_splits(mode, device):
    # (Small reruns of every backend: test_backend_contract.py.) Here the work of each row
    # splits over many items / CTAs.
    scores, labels = _big_case(device)
    first = native.rank_sort_rows(scores, labels, 0.5, 0.0, mode[1], True)
    for _ in range(3):
        again = native.rank_sort_rows(scores, labels, 0.5, 0.0, mode[1], True)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.parametrize("mode", MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_same_bits_for_any_thread_count(dtype, mode):
    scores, labels = _big_case("cpu")
    scores = scores.to(dtype)
    labels = labels.to(accumulation_dtype(dtype))
    saved = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, max(saved, 4)):
            torch.set_num_threads(threads)
            results.append(native.rank_sort_rows(scores, labels, 0.5, 0.0, mode[1], True))
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# --- sizes ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_large_shape_runs_on_cpu():
    heatmaps, targets, _ = shape_case("large")
    rows = heatmaps.reshape(-1, heatmaps.shape[-2] * heatmaps.shape[-1])
    rank, sort, npos, grad = native.rank_sort_rows(rows, targets.reshape(rows.shape), 0.5,
                                                   0.0, False, True)
    assert torch.isfinite(rank).all() and torch.isfinite(sort).all()
    assert torch.isfinite(grad).all() and grad.shape == rows.shape
    # One row against the reference (the whole shape is too slow for it).
    k = int(torch.argmax(npos))
    want = torch_pairwise.rank_sort_rows(rows[k:k + 1], targets.reshape(rows.shape)[k:k + 1], 0.5,
                                    0.0, False, True)
    torch.testing.assert_close(rank[k:k + 1], want[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad[k:k + 1], want[3], rtol=1e-4, atol=1e-6)


# --- CUDA only --------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_OK, reason="needs a GPU and rspose_kernels._C built with CUDA")
def test_cuda_path_never_syncs():
    scores, labels = random_rows(8, 500, seed=15, pos_frac=0.1, empty_rows=1, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for exact in (False, True):
            native.rank_sort_rows(scores, labels, 0.5, 0.0, exact, True)
        s = scores.detach().clone().requires_grad_(True)
        out = rk.rank_sort_loss(s, labels, backend="cuda")
        out.loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_OK, reason="needs a GPU and rspose_kernels._C built with CUDA")
def test_cuda_runs_on_a_side_stream():
    scores, labels = random_rows(6, 700, seed=16, pos_frac=0.2, device="cuda")
    want = native.rank_sort_rows(scores, labels, 0.5, 0.0, False, True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = native.rank_sort_rows(scores, labels, 0.5, 0.0, False, True)
    torch.cuda.current_stream().wait_stream(stream)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
