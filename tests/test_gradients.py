"""gradcheck of the exact mode, the identity rule's zero-sum property, and the reductions."""
import pytest
import torch

import rspose_kernels as rk
from rspose_kernels.testing import random_rows
from tests.reference import loop


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("delta", [0.25, 1.0])
def test_gradcheck_exact(reduction, delta):
    scores, labels = random_rows(4, 13, seed=10, pos_frac=0.4, dtype=torch.float64,
                                 empty_rows=1)
    weight = torch.tensor([1.0, 0.5, 2.0, 0.0], dtype=torch.float64)
    scores.requires_grad_(True)

    def f(s):
        return rk.rank_sort_loss(s, labels, weight=weight, delta=delta, reduction=reduction,
                                 grad_mode="exact", backend="torch").loss

    assert torch.autograd.gradcheck(f, (scores,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_identity_rows_sum_to_zero(ties, delta):
    scores, labels = random_rows(8, 41, seed=11, pos_frac=0.3, ties=ties, dtype=torch.float64,
                                 empty_rows=1, all_pos_rows=1)
    scores.requires_grad_(True)
    rk.rank_sort_loss(scores, labels, delta=delta, reduction="sum", backend="torch").loss.backward()
    assert scores.grad.abs().sum() > 0
    torch.testing.assert_close(scores.grad.sum(1), torch.zeros(8, dtype=torch.float64),
                               atol=1e-12, rtol=0)


def _loop_grad(scores, labels):
    return loop.rows(scores, labels, 0.5, 0.0)


def test_none_with_random_upstream_gradient():
    scores, labels = random_rows(5, 30, seed=12, pos_frac=0.3, dtype=torch.float64, empty_rows=1)
    weight = torch.tensor([1.0, 2.0, 0.0, 0.5, 1.5], dtype=torch.float64)
    upstream = torch.randn(5, dtype=torch.float64)
    scores.requires_grad_(True)
    out = rk.rank_sort_loss(scores, labels, weight=weight, reduction="none", backend="torch")
    out.loss.backward(upstream)
    rank, sort, g = _loop_grad(scores, labels)
    torch.testing.assert_close(out.loss, weight * (rank + sort))
    torch.testing.assert_close(scores.grad, (upstream * weight)[:, None] * g)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduction_and_scaled_loss(reduction):
    scores, labels = random_rows(6, 25, seed=13, pos_frac=0.3, dtype=torch.float64, empty_rows=2)
    weight = torch.tensor([1.0, 1.0, 2.0, 0.0, 0.5, 1.5], dtype=torch.float64)
    scores.requires_grad_(True)
    out = rk.rank_sort_loss(scores, labels, weight=weight, reduction=reduction, backend="torch")
    (2 * out.loss).backward()
    rank, sort, g = _loop_grad(scores, labels)
    # Rows 0 and 1 are empty and row 3 has weight 0: the mean is over rows 2, 4, 5.
    denom = weight[[2, 4, 5]].sum() if reduction == "mean" else 1.0
    torch.testing.assert_close(out.loss, (weight * (rank + sort)).sum() / denom)
    torch.testing.assert_close(out.rank, (weight * rank).sum() / denom)
    torch.testing.assert_close(out.sort, (weight * sort).sum() / denom)
    torch.testing.assert_close(scores.grad, 2 * weight[:, None] * g / denom)
    assert not out.rank.requires_grad and not out.sort.requires_grad


def test_mean_with_nothing_valid_is_zero_and_connected():
    scores, labels = random_rows(3, 10, seed=14, empty_rows=1)
    scores.requires_grad_(True)
    out = rk.rank_sort_loss(scores, labels, weight=torch.zeros(3), backend="torch")
    assert out.loss.item() == 0 and out.loss.requires_grad
    out.loss.backward()
    assert torch.equal(scores.grad, torch.zeros_like(scores))


def test_no_rows():
    scores = torch.zeros(0, 7, requires_grad=True)
    out = rk.rank_sort_loss(scores, torch.zeros(0, 7), backend="torch")
    out.loss.backward()
    assert out.loss.item() == 0 and scores.grad.shape == (0, 7)


def test_spatial_and_simcc_are_reshapes_of_the_core():
    from rspose_kernels.testing import heatmap_case, simcc_case
    heat, target, tw = heatmap_case(2, 3, 9, 7, 1.0, seed=15)
    a = rk.spatial_rs_loss(heat, target, tw[..., None, None], backend="torch")
    b = rk.rank_sort_loss(heat.flatten(2), target.flatten(2), weight=tw,
                          pos_thr=rk.HEATMAP_POS_THR, backend="torch")
    torch.testing.assert_close(torch.stack(a), torch.stack(b))
    (x, y), (gx, gy), tw = simcc_case(2, 3, 40, 30, 3.0, seed=16)
    half = [rk.rank_sort_loss(p, t / t.amax(-1, keepdim=True).clamp_min(1e-12), weight=tw,
                              pos_thr=rk.losses.SIMCC_POS_THR, backend="torch")
            for p, t in ((x, gx * 0.2), (y, gy * 0.2))]   # rescaled to peak 1 inside
    c = rk.simcc_rs_loss((x, y), (gx * 0.2, gy * 0.2), tw, backend="torch")
    torch.testing.assert_close(c.loss, (half[0].loss + half[1].loss) / 2)


def test_logging_components_detached_even_with_weights_requiring_grad():
    scores, labels = random_rows(3, 12, seed=17, pos_frac=0.4)
    weight = torch.ones(3, requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        out = rk.rank_sort_loss(scores.requires_grad_(True), labels, weight=weight,
                                reduction=reduction, backend="torch")
        assert out.loss.requires_grad
        assert not out.rank.requires_grad and not out.sort.requires_grad


@pytest.mark.parametrize("dtype,share", [(torch.float16, 0.5), (torch.bfloat16, 0.05)],
                         ids=["float16", "bfloat16"])
def test_half_gradient_is_rounded_after_the_upstream_scale(dtype, share):
    # A real loss's per-element gradients sit near 1e-5 (here one 256×192 heatmap per row, the
    # benchmark's `large` shape), below float16's normal range (6.1e-5): they must be scaled (here
    # like a GradScaler, ×65536, and by the weights' mean) in float32 before the one rounding
    # to half. The rounding lives in ops.py, shared by every backend (each backend's own
    # gradient is checked before it, at float32's tolerance, by its parity tests), so one
    # fast backend runs it.
    from rspose_kernels.backends import torch_pairwise
    from rspose_kernels.testing import TOLERANCES, heatmap_case
    backend = "cpu" if "cpu" in rk.available_backends("cpu") else "torch"
    heat, target, _ = heatmap_case(1, 2, 256, 192, 1.0, seed=18, invisible=0.0)
    tw = torch.tensor([[1.0, 0.7]])          # upstream 65536·w/Σw: not a power of two
    scores = heat.to(dtype).requires_grad_(True)
    (rk.spatial_rs_loss(scores, target, tw, backend=backend).loss * 65536).backward()
    ref = heat.to(dtype).double().requires_grad_(True)
    (rk.spatial_rs_loss(ref, target, tw, backend="torch").loss * 65536).backward()
    rtol, atol = TOLERANCES[dtype]           # one rounding to half (testing.py)
    torch.testing.assert_close(scores.grad.double(), ref.grad, rtol=rtol, atol=atol)
    # Sharp: rounding the row gradient to half first, then scaling, misses that bound on a
    # large share of elements: most of them in float16 (underflow to subnormals), the
    # double-rounded ones in bfloat16.
    rows = heat.to(dtype).flatten(2).flatten(0, 1)
    row_grad = torch_pairwise.rank_sort_rows(rows, target.flatten(2).flatten(0, 1), 0.5, 0.0,
                                        False, True)[3]
    upstream = (65536 * tw / tw.sum()).reshape(-1, 1)
    wrong = (row_grad.to(dtype) * upstream.to(dtype)).double().reshape(ref.shape)
    missed = (wrong - ref.grad).abs() > atol + rtol * ref.grad.abs()
    assert missed.double().mean() > share
