"""The torch backend against the slow per-positive loop written straight from
docs/DESIGN.md §2 (tests/reference/loop.py)."""
import pytest
import torch

import rspose_kernels as rk
from rspose_kernels.testing import DELTAS, ROW_CASES, random_rows, row_case
from tests.reference import loop
from tests.reference.parity import assert_close


def per_row(scores, labels, **kw):
    """Per-row loss values and per-row gradients through the public API."""
    scores = scores.detach().clone().requires_grad_(True)
    out = rk.rank_sort_loss(scores, labels, reduction="none", backend="torch", **kw)
    out.loss.sum().backward()
    return out, scores.grad


@pytest.mark.parametrize("case", sorted(ROW_CASES))
@pytest.mark.parametrize("delta", DELTAS)
def test_identity_matches_loop(case, delta):
    scores, labels = row_case(case, seed=1, dtype=torch.float64)
    out, grad = per_row(scores, labels, delta=delta)
    rank, sort, g = loop.rows(scores, labels, delta, 0.0)
    assert_close(out.rank, rank, torch.float64)
    assert_close(out.sort, sort, torch.float64)
    assert_close(out.loss, rank + sort, torch.float64)
    assert_close(grad, g, torch.float64)


@pytest.mark.parametrize("case", ["plain", "empty_and_full_rows", "single_element", "sparse_long"])
@pytest.mark.parametrize("delta", [0.25, 0.5, 1.0])
def test_exact_matches_autograd_of_loop(case, delta):
    # Continuous scores; pairs exactly ±δ apart: tests/test_against_loop.py.
    scores, labels = row_case(case, seed=2, dtype=torch.float64)
    out, grad = per_row(scores, labels, delta=delta, grad_mode="exact")
    rank, sort, g = loop.rows(scores, labels, delta, 0.0, grad_mode="exact")
    assert_close(out.loss, rank + sort, torch.float64)
    assert_close(grad, g, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("grad_mode", ["identity", "exact"])
def test_dtypes(dtype, grad_mode):
    scores, labels = random_rows(6, 53, seed=3, pos_frac=0.3, dtype=dtype, empty_rows=1)
    out, grad = per_row(scores, labels, grad_mode=grad_mode)
    assert grad.dtype == dtype
    assert out.loss.dtype == (torch.float32)
    rank, sort, g = loop.rows(scores.double(), labels, 0.5, 0.0, grad_mode=grad_mode)
    assert_close(out.loss, rank + sort, torch.float32)
    assert_close(grad, g, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("grad_mode", ["identity", "exact"])
def test_half_rows_are_float32_sums(dtype, grad_mode):
    # The rows as dispatch hands them to the op, before its one rounding to half: float32
    # sums over the rounded scores, so held to float32's tolerance (the public API's half
    # gradient above cannot show a rounding done too early: rounding twice by 1 is once).
    from rspose_kernels.dispatch import backend_fn
    scores, labels = random_rows(6, 53, seed=3, pos_frac=0.3, dtype=dtype, empty_rows=1)
    rank, sort, _, grad = backend_fn("torch")(scores, labels, 0.5, 0.0, grad_mode == "exact",
                                              True)
    assert rank.dtype == grad.dtype == torch.float32
    want = loop.rows(scores.double(), labels, 0.5, 0.0, grad_mode=grad_mode)
    for got, ref in zip((rank, sort, grad), want):
        assert_close(got, ref, torch.float32)


def test_pos_thr_and_weights():
    scores, labels = random_rows(5, 40, seed=4, pos_frac=0.6, dtype=torch.float64)
    weight = torch.tensor([0.5, 0.0, 2.0, 1.0, 3.0], dtype=torch.float64)
    out, grad = per_row(scores, labels, pos_thr=0.4, weight=weight)
    rank, sort, g = loop.rows(scores, labels, 0.5, 0.4)
    assert_close(out.loss, weight * (rank + sort), torch.float64)
    assert_close(grad, weight[:, None] * g, torch.float64)


def test_leading_dims_and_non_contiguous():
    base, labels = random_rows(6, 20, seed=5, pos_frac=0.4, dtype=torch.float64)
    scores = base.reshape(2, 3, 20).transpose(0, 1)       # [3, 2, 20], non-contiguous
    assert not scores.is_contiguous()
    out, grad = per_row(scores, labels.reshape(2, 3, 20).transpose(0, 1))
    rank, sort, g = loop.rows(base, labels, 0.5, 0.0)
    assert out.loss.shape == (3, 2)
    assert_close(out.loss.transpose(0, 1).reshape(-1), rank + sort, torch.float64)
    assert_close(grad.transpose(0, 1).reshape(6, 20), g, torch.float64)


def test_expanded_inputs():
    # One row broadcast to four (stride 0): four equal losses, gradients summed into the row.
    base, labels = random_rows(3, 20, seed=5, pos_frac=0.4, dtype=torch.float64)
    row_s, row_y = base[:1], labels[2:3]
    leaf = row_s.clone().requires_grad_(True)
    out = rk.rank_sort_loss(leaf.expand(4, 20), row_y.expand(4, 20), reduction="none",
                            backend="torch")
    out.loss.sum().backward()
    rank, sort, g = loop.rows(row_s, row_y, 0.5, 0.0)
    assert_close(out.loss, (rank + sort).expand(4), torch.float64)
    assert_close(leaf.grad, 4 * g, torch.float64)


def test_block_sizes_do_not_change_the_result(monkeypatch):
    # Force many tiny row and positive blocks: the chunking must be invisible.
    from rspose_kernels.backends import torch_pairwise
    scores, labels = random_rows(7, 45, seed=6, pos_frac=0.5, dtype=torch.float64, empty_rows=2)
    full, g_full = per_row(scores, labels)
    monkeypatch.setattr(torch_pairwise, "PAIR_BUDGET", 50)
    small, g_small = per_row(scores, labels)
    assert_close(small.loss, full.loss, torch.float64)
    assert_close(g_small, g_full, torch.float64)


def test_no_grad_needed_skips_gradient(monkeypatch):
    # The backend is asked for no gradient (and returns none) unless autograd will want one.
    from rspose_kernels import ops
    from rspose_kernels.backends import torch_pairwise
    calls = []

    def spy(scores, labels, delta, pos_thr, exact, need_grad, **kw):   # kw: the algorithm
        out = torch_pairwise.rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad)
        calls.append((need_grad, tuple(out[3].shape)))
        return out

    monkeypatch.setattr(ops, "backend_fn", lambda name: spy)
    scores, labels = random_rows(3, 16, seed=8)
    with torch.no_grad():
        out = rk.rank_sort_loss(scores.requires_grad_(True), labels, backend="torch")
    assert out.loss.grad_fn is None and torch.isfinite(out.loss)
    rk.rank_sort_loss(scores.detach(), labels, backend="torch")
    trained = rk.rank_sort_loss(scores, labels, backend="torch")
    assert calls == [(False, (0,)), (False, (0,)), (True, (3, 16))]
    assert trained.loss.grad_fn is not None
