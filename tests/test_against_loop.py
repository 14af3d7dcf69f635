"""Every CPU backend, through the public API, against the loop written from docs/DESIGN.md
§2 (tests/reference/loop.py), on the options and edge rules the row-level parity with the torch
reference cannot vouch for: a rule the reference and a kernel both got wrong passes parity.

The torch backend's own cases against the loop are in test_torch_backend.py.
"""
import pytest
import torch

import rspose_kernels as rk
from rspose_kernels.losses import SIMCC_POS_THR
from rspose_kernels.testing import random_rows, simcc_case
from tests.reference import loop
from tests.reference.parity import assert_close

BACKENDS = rk.available_backends("cpu")


def per_row(backend, scores, labels, **kw):
    """Per-row values and the gradient of their sum, through rank_sort_loss."""
    leaf = scores.detach().clone().requires_grad_(True)
    out = rk.rank_sort_loss(leaf, labels, reduction="none", backend=backend, **kw)
    out.loss.sum().backward()
    return out, leaf.grad


def assert_rows_match_loop(out, grad, rank, sort, g, grad_dtype=torch.float32):
    assert_close(out.rank, rank)
    assert_close(out.sort, sort)
    assert_close(out.loss, rank + sort)
    assert_close(grad, g, grad_dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grad_mode", ["identity", "exact"])
def test_simcc_threshold_with_soft_negatives(backend, grad_mode):
    # SimCC's default τ = exp(−4.5) on untruncated Gaussians: the tails are labelled, yet
    # negatives (soft negatives), and must be treated exactly like zero-label ones.
    (x, _), (gx, _), _ = simcc_case(2, 3, 40, 30, 3.0, seed=70, invisible=0.0)
    scores, labels = x.reshape(6, 40), gx.reshape(6, 40)
    soft = (labels > 0) & (labels <= SIMCC_POS_THR)
    assert soft.sum() > 60
    out, grad = per_row(backend, scores, labels, pos_thr=SIMCC_POS_THR, grad_mode=grad_mode)
    assert_rows_match_loop(out, grad, *loop.rows(scores, labels, 0.5, SIMCC_POS_THR, grad_mode))


def grid_case(delta, seed):
    """Scores on a grid of step δ/2 (many pairs exactly 0, ±δ, ±2δ apart, all exact in
    float32) and labels quantised to quarters (many equal labels); row 0 has no positive."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(-4, 5, (5, 23), generator=g).float() * (delta / 2)
    quality = torch.randint(1, 5, (5, 23), generator=g).float() / 4
    labels = torch.where(torch.rand(5, 23, generator=g) < 0.4, quality, torch.zeros(()))
    labels[0] = 0
    return scores, labels


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("delta", [0.25, 0.5])
def test_exact_slope_rule_at_plus_minus_delta_with_label_ties(backend, delta):
    scores, labels = grid_case(delta, seed=71)
    pos = labels > 0
    x = scores[:, None, :] - scores[:, :, None]                 # x_ij, i a positive
    assert ((x.abs() == delta) & pos[:, :, None]).sum() > 100
    tied = (labels[:, :, None] == labels[:, None, :]) & pos[:, :, None] & pos[:, None, :]
    assert tied.sum() > 2 * pos.sum()                           # more than the j = i pairs
    out, grad = per_row(backend, scores, labels, delta=delta, grad_mode="exact")
    rank, sort, g = loop.rows(scores, labels, delta, 0.0, grad_mode="exact")
    assert_rows_match_loop(out, grad, rank, sort, g)
    # Sharp: a slope of 1/(2δ) at |x| = δ as well (autograd of clamp) fails this case.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "smoothed_step",
                   lambda x, d: torch.clamp(x / (2 * d) + 0.5, 0, 1) if d > 0 else (x >= 0))
        wrong = loop.rows(scores, labels, delta, 0.0, grad_mode="exact")[2]
    with pytest.raises(AssertionError):
        assert_close(grad, wrong)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_weight_gradient(backend, reduction):
    # The reduction is differentiable in the weights (e.g. learned per-keypoint weights).
    scores, labels = random_rows(4, 13, seed=72, pos_frac=0.4, dtype=torch.float64,
                                 empty_rows=1)
    weight = torch.tensor([0.7, 1.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)

    def loss(w):
        return rk.rank_sort_loss(scores, labels, weight=w, reduction=reduction,
                                 backend=backend).loss

    # fast_mode: one random direction, two evaluations (the interpreted triton is slow)
    assert torch.autograd.gradcheck(loss, (weight,), eps=1e-6, atol=1e-8, fast_mode=True)
    # And its value from the loop's per-row losses v: d/dw of Σ w·v / Σ_valid w, Σ w·v, w·v.
    rank, sort, _ = loop.rows(scores, labels, 0.5, 0.0)
    v = rank + sort
    upstream = torch.tensor([0.3, -1.2, 2.0, 0.5], dtype=torch.float64)
    out = loss(weight)
    (got,) = torch.autograd.grad(out, weight, upstream if reduction == "none" else None)
    if reduction == "mean":
        valid = (labels > 0).any(1)                             # row 0 is empty
        assert valid.tolist() == [False, True, True, True]
        total = weight.detach()[valid].sum()
        want = torch.where(valid, (v - (weight.detach() * v).sum() / total) / total, 0.0)
    else:
        want = v * (upstream if reduction == "none" else 1.0)
    assert_close(got, want, torch.float64)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_gradcheck_scores_and_weight_jointly(backend):
    # (triton: weight-only above; joint gradcheck needs ~100 interpreted launches)
    scores, labels = random_rows(3, 11, seed=73, pos_frac=0.5, dtype=torch.float64)
    scores.requires_grad_(True)
    weight = torch.tensor([0.5, 1.5, 1.0], dtype=torch.float64, requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda s, w: rk.rank_sort_loss(s, labels, weight=w, reduction=reduction,
                                           grad_mode="exact", backend=backend).loss,
            (scores, weight), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_simcc_rs_loss_sum_and_none(backend, reduction):
    (x, y), (gx, gy), tw = simcc_case(2, 3, 20, 16, 2.0, seed=74, invisible=0.2)
    gx, gy = gx * 0.3, gy * 0.3                   # rescaled to peak 1 inside the loss
    tw = tw * torch.tensor([1.0, 0.5, 2.0])
    upstream = torch.randn(2, 3, generator=torch.Generator().manual_seed(74))
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, y)]
    out = rk.simcc_rs_loss(tuple(leaves), (gx, gy), tw, reduction=reduction, backend=backend)
    out.loss.backward(upstream if reduction == "none" else None)
    up = upstream.reshape(-1) if reduction == "none" else torch.ones(6)
    want = {"loss": 0, "rank": 0, "sort": 0}
    for leaf, p, t in zip(leaves, (x, y), (gx, gy)):
        t = t / t.amax(-1, keepdim=True).clamp_min(1e-30)
        rank, sort, g = loop.rows(p.reshape(6, -1), t.reshape(6, -1), 0.5, SIMCC_POS_THR)
        w = tw.reshape(-1).double()
        for name, v in (("loss", rank + sort), ("rank", rank), ("sort", sort)):
            want[name] = want[name] + w * v / 2     # the mean of the x and y losses
        assert_close(leaf.grad, ((up * w)[:, None] * g / 2).reshape(leaf.shape))
    for name, v in want.items():
        v = v.reshape(2, 3) if reduction == "none" else v.sum()
        assert_close(getattr(out, name), v, msg=name)


# The torch backend's half-precision cases are in test_torch_backend.py.
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("grad_mode", ["identity", "exact"])
def test_half_scores_through_the_public_api(backend, dtype, grad_mode):
    scores, labels = random_rows(5, 37, seed=75, pos_frac=0.3, ties=True, dtype=dtype,
                                 empty_rows=1)
    out, grad = per_row(backend, scores, labels, grad_mode=grad_mode)
    assert out.loss.dtype == out.rank.dtype == torch.float32 and grad.dtype == dtype
    rank, sort, g = loop.rows(scores.double(), labels, 0.5, 0.0, grad_mode)
    # Losses are float32 sums; the gradient is rounded once to the scores' dtype.
    assert_rows_match_loop(out, grad, rank, sort, g, grad_dtype=dtype)
