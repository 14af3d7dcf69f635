"""Shared by the backend parity tests: devices, the valid (mode, δ) grid, backend
availability, and the comparisons of a backend's ``rank_sort_rows`` with the torch reference
on the same inputs and of a public-API result with the loop reference."""
import dataclasses
import importlib
import os

import pytest
import torch

from rspose_kernels import dispatch
from rspose_kernels.backends import accumulation_dtype, torch_pairwise
from rspose_kernels.testing import DELTAS, TOLERANCES

# The devices present here (CUDA only with a GPU).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

MODES = [("identity", False), ("exact", True)]
# The exact gradient needs δ > 0 (an error, tested on its own), so that point is not in the grid.
MODE_DELTAS = [pytest.param(mode, delta, id=f"{mode[0]}-{delta}")
               for mode in MODES for delta in DELTAS if not (mode[1] and delta == 0)]


def require(module: str, env: str, reason: str):
    """The backend module, or a skip; where ``env`` is "1" (CI) its absence fails instead."""
    if os.environ.get(env) == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)


def require_cuda_build(available: bool, what: str):
    """Skip when the CUDA part was not built here; fail instead where RSPOSE_REQUIRE_CUDA_BUILD
    is "1" (scripts/test.sh sets it whenever nvcc is found, so CI cannot go green with the
    CUDA kernels silently left out of the build)."""
    if available:
        return
    if os.environ.get("RSPOSE_REQUIRE_CUDA_BUILD") == "1":
        pytest.fail(f"RSPOSE_REQUIRE_CUDA_BUILD=1 but {what}")
    pytest.skip(what)


def device_params(cpu_ok: bool, cpu_reason: str, cuda_ok: bool, cuda_reason: str):
    """Run on CPU where the backend can, on CUDA only where a GPU is (else not at all)."""
    params = [pytest.param("cpu", marks=pytest.mark.skipif(not cpu_ok, reason=cpu_reason))]
    if torch.cuda.is_available():
        params.append(pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
            not cuda_ok, reason=cuda_reason)]))
    return params


def pairwise_only(monkeypatch, name: str):
    """Stand in a record of backend ``name`` that has only the pairwise algorithm (every
    backend has both now): ``dispatch.backend_record`` is replaced for the test."""
    real = dispatch.backend_record

    def record(backend):
        found = real(backend)
        if backend == name and found is not None:
            return dataclasses.replace(found, algorithms=("pairwise",))
        return found
    monkeypatch.setattr(dispatch, "backend_record", record)


def against_reference(fn, scores, labels, delta, exact, *, pos_thr=0.0, need_grad=True, **kw):
    """(backend result, reference result) on the same (possibly rounded) scores."""
    labels = labels.to(accumulation_dtype(scores.dtype))
    got = fn(scores, labels, delta, pos_thr, exact, need_grad, **kw)
    want = torch_pairwise.rank_sort_rows(scores.cpu(), labels.cpu(), delta, pos_thr, exact,
                                    need_grad)
    return got, want


def assert_parity(got, want, dtype, need_grad=True):
    """``got`` (a backend's rank_sort_rows) matches ``want`` (the reference) for scores of
    ``dtype``.

    Both sum in the accumulation dtype from the same (rounded) scores, and nothing here is
    rounded back to ``dtype``: rank, sort and the gradient are held to the accumulation
    dtype's tolerance (float32's for half scores, docs/DESIGN.md §4), which rejects a 0.1% error
    (tests/test_tolerances.py). The half entries of TOLERANCES are for the gradient the
    public API returns, after its one rounding to half.
    """
    acc = accumulation_dtype(dtype)
    rtol, atol = TOLERANCES[acc]
    rank, sort, npos, grad = got
    assert rank.dtype == sort.dtype == acc
    assert npos.dtype == torch.int32
    assert torch.equal(npos.cpu(), want[2].cpu())
    pairs = [(rank, want[0]), (sort, want[1])]
    if need_grad:
        assert grad.dtype == acc
        pairs.append((grad, want[3]))
    else:
        assert grad.shape == (0,)
    for a, b in pairs:
        assert a.shape == b.shape
        torch.testing.assert_close(a.cpu().double(), b.cpu().double(), rtol=rtol, atol=atol,
                                   equal_nan=True)


def assert_close(actual, expected, dtype=torch.float32, msg=None):
    """A public-API result against the float64 loop reference, at ``TOLERANCES[dtype]``.

    ``dtype`` is where the result was last rounded: the accumulation dtype for losses (float32
    for half scores), the scores' dtype for the gradient the API returns.
    """
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=rtol,
                               atol=atol, msg=msg)
