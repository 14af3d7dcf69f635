"""The backend contract (rspose_kernels/backends/__init__.py), once for every backend.

Each test runs on every registered (backend, device, algorithm): the records of
``dispatch.registered_backends()``, each one's ``devices`` × ``algorithms``, called through the
record's own ``rank_sort_rows`` and compared with the torch reference (``torch_pairwise``) on
the same inputs at ``rspose_kernels.testing.TOLERANCES`` (``tests.reference.parity``). A case
whose device is not present here skips ("needs CUDA"). The Triton backend runs on CPU under
its interpreter (conftest.py), which is slow: the inputs stay small.

What belongs to one backend only (tiles and ``Blocks`` overrides, thread counts, launch
sequences, capacity, the kernel boundary, the plan's device-versus-host agreement) is in its
own file: test_native.py, test_triton*.py, test_torch_backend.py, test_bucketed.py.
"""
import contextlib
import os

import pytest
import torch

from rspose_kernels import dispatch
from rspose_kernels.testing import ROW_CASES, random_rows, row_case
from tests.reference.cases import non_finite_rows
from tests.reference.parity import MODE_DELTAS, MODES, against_reference, assert_parity

OP = torch.ops.rspose_kernels.rank_sort_rows
GRID = [p.values for p in MODE_DELTAS]          # ((mode, exact), δ): every valid pair
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Where these are "1" (CI), the backends they name must be registered, not silently absent.
REQUIRED = {"RSPOSE_REQUIRE_NATIVE": ("cpu", "cuda"), "RSPOSE_REQUIRE_TRITON": ("triton",)}


def _skip_reason(record, device):
    if device == "cuda" and not torch.cuda.is_available():
        return "needs CUDA"
    if record.name == "triton" and device == "cuda":
        from rspose_kernels.backends.triton_pairwise import _INTERPRETED
        if _INTERPRETED:
            return "compiled Triton kernels need TRITON_INTERPRET unset or 0"
    if not record.is_available(device):
        return f"the {record.name!r} backend is not available for {device} tensors here"
    return None


def _places():
    for record in dispatch.registered_backends():
        for device in record.devices:
            reason = _skip_reason(record, device)
            marks = [pytest.mark.skipif(reason is not None, reason=reason or "")]
            if device == "cuda":
                marks.append(pytest.mark.cuda)
            for algorithm in record.algorithms:
                yield pytest.param(record.name, device, algorithm, marks=marks,
                                   id=f"{record.name}-{device}-{algorithm}")


PLACES = list(_places())
place = pytest.mark.parametrize("backend,device,algorithm", PLACES)


def rows_fn(backend, algorithm):
    """The record's ``rank_sort_rows`` with ``algorithm`` bound."""
    fn = dispatch.backend_record(backend).rank_sort_rows

    def call(*args, **kw):
        return fn(*args, algorithm=algorithm, **kw)
    return call


@contextlib.contextmanager
def labelled(label):
    """Name the loop iteration a failed assertion came from."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"[{label}] {exc}") from exc


def test_required_backends_are_registered():
    names = {record.name for record in dispatch.registered_backends()}
    assert "torch" in names
    for env, wanted in REQUIRED.items():
        if os.environ.get(env) == "1":
            assert set(wanted) <= names, f"{env}=1 but registered: {sorted(names)}"
    ids = [p.id for p in PLACES]
    assert len(ids) == len(set(ids)) and "torch-cpu-pairwise" in ids


@place
@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_row_cases_match_torch(case, backend, device, algorithm):
    # Empty and all-positive rows, L = 1, no rows, ties, sparse long rows; every (mode, δ).
    scores, labels = row_case(case, seed=3, device=device)
    fn = rows_fn(backend, algorithm)
    if algorithm == "bucketed" and case == "plain":    # the rows really go bucketed
        plan = dispatch.backend_record(backend).bucketed_plan
        assert plan(scores, labels, 0.5, 0.0, "bucketed").all()
    for (name, exact), delta in GRID:
        with labelled(f"{name} δ={delta}"):
            assert_parity(*against_reference(fn, scores, labels, delta, exact), torch.float32)


@place
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dtypes_match_torch(dtype, backend, device, algorithm):
    # Half scores are summed in float32 (held to float32's tolerance), float64 in float64.
    # (Rows across the native kernels' blocks, in every dtype: test_native.py.)
    scores, labels = random_rows(4, 41, seed=5, pos_frac=0.3, ties=True, empty_rows=1,
                                 all_pos_rows=1, dtype=dtype, device=device)
    fn = rows_fn(backend, algorithm)
    for name, exact in MODES:
        with labelled(name):
            assert_parity(*against_reference(fn, scores, labels, 0.5, exact), dtype)


@place
def test_positive_threshold_matches_torch(backend, device, algorithm):
    # -0.5: every element is a positive, zero labels included; 0.999: few positives or
    # none. (SimCC's exp(-4.5) with soft negatives, on every backend: test_against_loop.py.)
    scores, labels = random_rows(4, 33, seed=8, pos_frac=0.6, device=device)
    fn = rows_fn(backend, algorithm)
    for pos_thr in (-0.5, 0.3, 0.999):
        for name, exact in MODES:
            with labelled(f"{name} τ={pos_thr}"):
                assert_parity(*against_reference(fn, scores, labels, 0.5, exact,
                                                 pos_thr=pos_thr), torch.float32)


@place
def test_nan_scores_give_nan_losses(backend, device, algorithm):
    scores, labels = non_finite_rows(device)
    fn = rows_fn(backend, algorithm)
    clean = [0, 3, 4]
    for delta in (0.0, 0.5):
        with labelled(f"δ={delta}"):
            got, want = against_reference(fn, scores, labels, delta, False)
            for g, w in zip(got[:2], want[:2]):     # NaN exactly where the reference has it
                assert torch.equal(torch.isnan(g.cpu()), torch.isnan(w))
            rank, sort = got[0].cpu(), got[1].cpu()
            loss = rank + sort
            # sort_row does not involve negatives: a NaN negative leaves it finite.
            assert torch.isnan(rank[1]) and not torch.isnan(sort[1])
            assert torch.isnan(rank[2]) and torch.isnan(sort[2])
            assert torch.isfinite(loss[clean]).all()
            assert_parity([t[clean] for t in got], [t[clean] for t in want], torch.float32)


@place
def test_no_rows_and_empty_rows(backend, device, algorithm):
    fn = rows_fn(backend, algorithm)
    for m, length in ((0, 9), (4, 1)):
        scores, labels = random_rows(m, length, seed=12, pos_frac=0.5, device=device)
        for name, exact in MODES:
            with labelled(f"M={m} L={length} {name}"):
                got, want = against_reference(fn, scores, labels, 0.5, exact)
                assert_parity(got, want, torch.float32)
                assert got[0].shape == got[2].shape == (m,) and got[3].shape == (m, length)
    # Rows without a positive: every output is 0.
    scores = torch.randn(3, 40, device=device)
    for name, exact in MODES:
        with labelled(f"no positive {name}"):
            rank, sort, npos, grad = fn(scores, torch.zeros_like(scores), 0.5, 0.0, exact, True)
            assert grad.shape == (3, 40)
            assert not rank.any() and not sort.any() and not npos.any() and not grad.any()


@place
def test_rows_of_length_zero(backend, device, algorithm):
    # Rows of L = 0 elements, M = 3 and M = 0 (the public API refuses L = 0; the contract
    # does not).
    fn = rows_fn(backend, algorithm)
    for m in (3, 0):
        scores, labels = random_rows(m, 0, seed=12, device=device)
        for name, exact in MODES:
            with labelled(f"M={m} {name}"):
                got, want = against_reference(fn, scores, labels, 0.5, exact)
                assert_parity(got, want, torch.float32)
                assert got[0].shape == got[2].shape == (m,) and got[3].shape == (m, 0)
                assert not got[0].any() and not got[1].any() and not got[2].any()


@place
def test_without_gradient(backend, device, algorithm):
    # need_grad=False: no gradient, and the same rank and sort, bit for bit, as with one.
    scores, labels = random_rows(4, 33, seed=6, pos_frac=0.5, empty_rows=1, device=device)
    fn = rows_fn(backend, algorithm)
    forward = []
    for pos_thr in (0.0, 0.4):
        for name, exact in MODES:
            with labelled(f"{name} τ={pos_thr}"):
                got, want = against_reference(fn, scores, labels, 0.5, exact,
                                              pos_thr=pos_thr, need_grad=False)
                assert_parity(got, want, torch.float32, need_grad=False)
                full = fn(scores, labels, 0.5, pos_thr, exact, True)
                assert torch.equal(got[0], full[0]) and torch.equal(got[1], full[1])
                assert torch.equal(got[2], full[2])
                forward.append(got[:3])
    # The forward is the same in both modes.
    for identity, exact in zip(forward[0::2], forward[1::2]):
        assert all(torch.equal(a, b) for a, b in zip(identity, exact))


@place
def test_bitwise_identical_reruns(backend, device, algorithm):
    # Deterministic kernels: no floating-point atomics, fixed summation orders.
    # (Rows whose work splits over many items, CTAs or programs: the per-backend files.)
    scores, labels = random_rows(4, 30, seed=7, ties=True, pos_frac=0.4, empty_rows=1,
                                 all_pos_rows=1, device=device)
    fn = rows_fn(backend, algorithm)
    for name, exact in MODES:
        first = fn(scores, labels, 0.5, 0.0, exact, True)
        for _ in range(2):
            again = fn(scores, labels, 0.5, 0.0, exact, True)
            for part, a, b in zip(("rank", "sort", "npos", "grad"), first, again):
                assert torch.equal(a, b), f"{name}: {part} differs between runs"


@place
def test_opcheck(backend, device, algorithm):
    # The custom op on this backend: schema, fake tensor, autograd registration, compile.
    s, y = random_rows(4, 21, seed=20, pos_frac=0.3, empty_rows=1, device=device)
    for alg in (algorithm,) + (("auto",) if algorithm == "bucketed" else ()):
        samples = [
            (s.clone().requires_grad_(True), y, 0.5, 0.0, False, True, backend, alg),
            (s.clone(), y, 0.0, 0.0, False, False, backend, alg),
            (s.clone().requires_grad_(True), y, 0.25, 0.0, True, True, backend, alg),
        ]
        for args in samples:
            torch.library.opcheck(OP, args)
