"""A guard on the tolerances: every parity comparison of the suite rejects a 0.1% error.

For each backend that runs here and each scores dtype, a correct result is perturbed by 0.1%
(relative) in its loss, rank, sort or gradient, one at a time, and the comparison the parity
tests use must reject it: ``parity.assert_parity`` for the rows a backend returns (every
backend's row tests), ``parity.assert_close`` for what the public API returns (the tests
against the loop reference). A tolerance loosened later, or a comparison that picks the
tolerance of the wrong dtype, fails here.
"""
import pytest
import torch

import rspose_kernels as rk
from rspose_kernels.backends import torch_pairwise
from rspose_kernels.checks import FLOAT_DTYPES
from rspose_kernels.dispatch import backend_fn
from rspose_kernels.testing import TOLERANCES, random_rows
from tests.reference import loop
from tests.reference.parity import against_reference, assert_close, assert_parity

ERROR = 1e-3
BACKENDS = rk.available_backends("cpu")
# Every backend on every device it runs on here (with a GPU the kernels load half scores
# themselves: where a half-precision bug would hide).
PLACES = [pytest.param(b, "cpu", id=f"{b}-cpu") for b in BACKENDS]
if torch.cuda.is_available():
    PLACES += [pytest.param(b, "cuda", id=f"{b}-cuda", marks=pytest.mark.cuda)
               for b in rk.available_backends("cuda")]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def scaled(result, part, factor):
    """``(rank, sort, npos, grad)`` with one part scaled; "loss" is rank + sort."""
    rank, sort, npos, grad = result
    if part in ("loss", "rank"):
        rank = rank * factor
    if part in ("loss", "sort"):
        sort = sort * factor
    if part == "grad":
        grad = grad * factor
    return rank, sort, npos, grad


def case(dtype):
    # An ordinary case: a few rows, ties, an empty and a full row.
    return random_rows(4, 48, seed=90, pos_frac=0.3, ties=True, empty_rows=1, all_pos_rows=1,
                       dtype=dtype)


def test_every_dtype_has_a_tolerance():
    assert set(TOLERANCES) == set(FLOAT_DTYPES)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend,device", PLACES)
def test_row_parity_rejects_a_tenth_of_a_percent(backend, device, dtype):
    scores, labels = (t.to(device) for t in case(dtype))
    fn = torch_pairwise.rank_sort_rows if backend == "torch" else backend_fn(backend)
    got, want = against_reference(fn, scores, labels, 0.5, False)
    assert_parity(got, want, dtype)
    for part in ("loss", "rank", "sort", "grad"):
        for factor in (1 + ERROR, 1 - ERROR):
            with pytest.raises(AssertionError):
                assert_parity(scaled(got, part, factor), want, dtype)
    with pytest.raises(AssertionError):     # a gradient that was never computed
        assert_parity(scaled(got, "grad", 0.0), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_public_api_comparison_rejects_a_tenth_of_a_percent(backend, dtype):
    scores, labels = case(dtype)
    leaf = scores.clone().requires_grad_(True)
    out = rk.rank_sort_loss(leaf, labels, reduction="none", backend=backend)
    out.loss.sum().backward()
    rank, sort, g = loop.rows(scores.double(), labels, 0.5, 0.0)
    acc = out.loss.dtype
    for got, want in ((out.loss, rank + sort), (out.rank, rank), (out.sort, sort)):
        assert_close(got, want, acc)
        for factor in (1 + ERROR, 1 - ERROR):
            with pytest.raises(AssertionError):
                assert_close(got.double() * factor, want, acc)
    # The gradient has been rounded once to `dtype`: for bfloat16 (2⁻⁸ ≈ 0.39% per rounding)
    # a 0.1% error is below what the result can show; it is caught before the rounding, at
    # the row level above. Every other dtype rejects 0.1% here too.
    assert_close(leaf.grad, g, dtype)
    error = 5e-3 if dtype == torch.bfloat16 else ERROR
    for factor in (1 + error, 1 - error):
        with pytest.raises(AssertionError):
            assert_close(leaf.grad.double() * factor, g, dtype)
