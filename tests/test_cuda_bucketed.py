"""The `cuda` backend's bucketed algorithm (csrc/cuda/rank_sort_bucketed_kernels.cuh) on a GPU,
against the torch reference: every mode and dtype, ties, odd rows, both algorithms and the
device's per-row choice, same bits run after run, no host sync. Without a GPU these tests do
not run; tests/test_cuda_emulated.py runs the same kernels under the host emulation, against
the CPU kernel, on every CI machine.

Tolerances: float32 and half scores are held to docs/DESIGN.md §4 (parity.assert_parity). float64 is
held to 1e-11: the histogram's Σs is in fixed point (one rounding per score, ≈ 2^-62·ñ·max|s|,
1e-15 relative at these sizes), everything else float64 like the reference.
"""
import pytest
import torch

import rspose_kernels as rk
from rspose_kernels.testing import ROW_CASES, heatmap_case, random_rows, row_case
from tests.reference.parity import MODE_DELTAS, MODES, against_reference, assert_parity, require

native = require("rspose_kernels.backends.native", "RSPOSE_REQUIRE_NATIVE",
                 "rspose_kernels._C is not built")
if not (torch.cuda.is_available() and native.is_available("cuda")):
    pytest.skip("needs a GPU and _C built with CUDA", allow_module_level=True)
pytestmark = pytest.mark.cuda


def on_cuda(algorithm):
    def fn(scores, labels, *args):
        out = native.rank_sort_rows(scores.cuda(), labels.cuda(), *args, algorithm=algorithm)
        return tuple(t.cpu() for t in out)
    return fn


def close64(got, want):
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-11, atol=1e-12,
                                   equal_nan=True)


@pytest.mark.parametrize("mode,delta", MODE_DELTAS)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_float64_matches_reference(ties, delta, mode):
    scores, labels = random_rows(7, 83, seed=1 + ties, pos_frac=0.35, ties=ties, empty_rows=1,
                                 all_pos_rows=1, dtype=torch.float64)
    got, want = against_reference(on_cuda("bucketed"), scores, labels, delta, mode[1])
    close64(got, want)


@pytest.mark.parametrize("mode,delta", MODE_DELTAS)
@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_row_cases_float32(case, delta, mode):
    scores, labels = row_case(case, seed=4)
    for algorithm in ("bucketed", "auto"):
        assert_parity(*against_reference(on_cuda(algorithm), scores, labels, delta, mode[1]),
                      torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("mode", MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize("regime", ["init", "trained"])
def test_heatmaps_every_dtype(regime, mode, dtype):
    heatmaps, targets, _ = heatmap_case(2, 3, 48, 40, 3.0, regime=regime, seed=5, dtype=dtype)
    scores, labels = heatmaps.reshape(6, -1), targets.reshape(6, -1)
    for delta in (0.25, 1.0) if mode[1] else (0.0, 0.5):
        got, want = against_reference(on_cuda("bucketed"), scores, labels, delta, mode[1])
        assert_parity(got, want, dtype)


@pytest.mark.parametrize("regime", ["init", "trained"])
def test_spec_large_rows(regime):
    # The `large` shape's rows (256×192, σ = 8: n up to 2401 positives, ñ ≈ 47k negatives):
    # several sort entries per thread and ~46 search items per row.
    heatmaps, targets, _ = heatmap_case(1, 3, 256, 192, 8.0, regime=regime, seed=14,
                                        invisible=0.0)
    scores, labels = heatmaps.reshape(3, -1), targets.reshape(3, -1)
    for exact in (False, True):
        got, want = against_reference(on_cuda("bucketed"), scores, labels, 0.5, exact)
        assert_parity(got, want, torch.float32)


def test_rows_past_the_sort_capacity_stay_exact():
    # 5000 positives: more than the shared-memory sort holds, so the row goes pairwise.
    g = torch.Generator().manual_seed(7)
    scores = torch.randn(2, 5200, generator=g, dtype=torch.float64)
    labels = torch.zeros(2, 5200, dtype=torch.float64)
    labels[0, 17] = 0.6
    labels[1, :5000] = torch.rand(5000, generator=g, dtype=torch.float64) * 0.99 + 0.01
    close64(*against_reference(on_cuda("bucketed"), scores, labels, 0.5, False))


def test_same_bits_run_after_run_and_no_host_sync():
    heatmaps, targets, _ = heatmap_case(4, 17, 64, 48, 2.0, seed=9, device="cuda")
    scores, labels = heatmaps.reshape(68, -1), targets.reshape(68, -1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        runs = [native.rank_sort_rows(scores, labels, 0.5, 0.0, exact, True,
                                      algorithm="bucketed")
                for exact in (False, True) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for first, again in ((runs[0], runs[1]), (runs[0], runs[2]), (runs[3], runs[4]),
                         (runs[3], runs[5])):
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_public_api_every_algorithm_agrees_and_gradcheck():
    heatmaps, targets, weight = heatmap_case(2, 3, 48, 40, 2.0, seed=12, dtype=torch.float64,
                                             invisible=0.0, device="cuda")
    results = {}
    for algorithm in ("pairwise", "bucketed", "auto"):
        h = heatmaps.clone().requires_grad_(True)
        out = rk.spatial_rs_loss(h, targets, weight, backend="cuda", algorithm=algorithm)
        out.loss.backward()
        results[algorithm] = (out.loss.detach(), h.grad)
    for algorithm in ("bucketed", "auto"):
        for a, b in zip(results[algorithm], results["pairwise"]):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    scores, labels = random_rows(3, 14, seed=11, pos_frac=0.5, dtype=torch.float64,
                                 device="cuda")
    scores.requires_grad_(True)
    torch.autograd.gradcheck(
        lambda s: rk.rank_sort_loss(s, labels, grad_mode="exact", delta=1.0, backend="cuda",
                                    algorithm="bucketed").loss, (scores,))
