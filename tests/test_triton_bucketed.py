"""The triton backend's bucketed path (backends/triton_bucketed.py) against the torch reference.

Under the Triton interpreter on CPU (conftest.py), so the rows stay small; the bucketed tiles
are shrunk (chunks and scan tiles of 8) so that several chunks per row, strided programs and
several scan tiles run. Every case also checks which rows the compaction sent bucketed, so a
test cannot pass on the pairwise path alone.
"""
import dataclasses

import pytest
import torch

from rspose_kernels.backends import accumulation_dtype
from rspose_kernels.testing import random_rows
from tests.reference.parity import against_reference, assert_parity, device_params, require

tk = require("rspose_kernels.backends.triton_backend", "RSPOSE_REQUIRE_TRITON",
             "triton is not installed")
tb = require("rspose_kernels.backends.triton_bucketed", "RSPOSE_REQUIRE_TRITON",
             "triton is not installed")
DEVICES = device_params(tk.is_available("cpu"), "CPU needs the interpreter (TRITON_INTERPRET=1)",
                        not tk._INTERPRETED, "compiled kernels need TRITON_INTERPRET unset or 0")

SMALL = dataclasses.replace(tk.Blocks(compact=32, a_pos=8, a_neg=16, a_pp=8, b_neg=16,
                                      b_neg_pos=8, b_pos=8, b_pos_pos=8, programs=2),
                            bucket_chunk=8, bucket_tile=8)
# (δ, exact): the step, the smooth ramp, and exact mode with δ = 0.25 and 0.5 on scores
# quantised to 0.5 (breakpoints exactly on scores).
MODES = [(0.0, False), (0.5, False), (0.25, True), (0.5, True)]


def _rows(device, dtype=torch.float32):
    """Ties, an empty row, an all-positive row and a row past the capacity (100 and 80
    positives > max_positives(100) = 64), one at it (64) and a NaN row."""
    scores, labels = random_rows(6, 100, seed=21, ties=True, pos_frac=0.12, empty_rows=1,
                                 all_pos_rows=0, dtype=dtype, device=device)
    labels[2, :] = torch.linspace(0.1, 1.0, 100)           # all positive: n = 100 > 64
    labels[3, :80] = 0.5 + 0.5 * torch.rand(80)             # 80 positives: past the capacity
    labels[4, :64] = 0.25 + 0.75 * torch.rand(64)           # exactly at the capacity
    labels[4, 64:] = 0.0
    scores[5, (labels[5] == 0).nonzero()[0, 0]] = float("nan")
    return scores, labels


def _check(scores, labels, delta, exact, algorithm, want_bucketed, dtype=torch.float32,
           blocks=SMALL):
    acc_labels = labels.to(accumulation_dtype(scores.dtype))
    got_rows = tk.bucketed_rows(scores, acc_labels, delta, 0.0, algorithm, blocks=blocks)
    assert got_rows.tolist() == want_bucketed
    got, want = against_reference(tk.rank_sort_rows, scores, labels, delta, exact,
                                  algorithm=algorithm, blocks=blocks)
    nan_rows = torch.isnan(scores).any(1).cpu()
    for g, w in zip(got[:2], want[:2]):     # NaN losses where the reference has them
        assert torch.equal(torch.isnan(g.cpu()), torch.isnan(w))
    # (The NaN rows' gradients are the pairwise kernels', whose NaN pattern in exact mode
    # differs from torch_pairwise's by one element: tests/test_triton.py compares clean rows.)
    clean = (~nan_rows).nonzero()[:, 0]
    assert_parity([t[clean.to(t.device)] for t in got], [t[clean] for t in want], dtype)
    return got


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("delta,exact", MODES)
def test_bucketed_matches_torch(delta, exact, device):
    scores, labels = _rows(device)
    assert tb.max_positives(100) == 64
    # Rows 0 (empty), 2 (100 positives), 3 (80) and 5 (a NaN) stay pairwise.
    _check(scores, labels, delta, exact, "bucketed", [False, True, False, False, True, False])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_scores(dtype, device):
    # Row 0 all positive and within the capacity (max_positives(60) = 60): no negatives.
    scores, labels = random_rows(3, 60, seed=22, pos_frac=0.2, all_pos_rows=1, dtype=dtype,
                                 device=device)
    for delta, exact in [(0.5, False), (0.5, True)]:
        _check(scores, labels, delta, exact, "bucketed", [True] * 3, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_float64_rows_stay_pairwise(device):
    scores, labels = random_rows(3, 50, seed=23, pos_frac=0.2, dtype=torch.float64,
                                 device=device)
    assert not tb.supports(torch.float64)
    _check(scores, labels, 0.5, False, "bucketed", [False] * 3, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_auto_chooses_like_the_cost_model(device):
    # n ≈ 48 positives against ≈ 350 kept negatives: bucketed under triton_backend.COST; n ≈ 4:
    # pairwise; δ = 1e-9 does not resolve at O(1) scores: pairwise even when forced.
    many, lab_many = random_rows(2, 400, seed=24, pos_frac=0.12, device=device)
    few, lab_few = random_rows(2, 400, seed=25, pos_frac=0.01, device=device)
    scores, labels = torch.cat([many, few]), torch.cat([lab_many, lab_few])
    want = tk.bucketed_plan(scores, labels, 0.5, 0.0, "auto")
    assert want.tolist() == [True, True, False, False]
    _check(scores, labels, 0.5, False, "auto", want.tolist())
    assert not tk.bucketed_rows(scores, labels, 1e-9, 0.0, "bucketed").any()
    assert tk.bucketed_plan(scores, labels, 0.5, 0.0, "bucketed").all()


@pytest.mark.parametrize("device", DEVICES)
def test_bitwise_deterministic(device):
    scores, labels = (t[:5] for t in _rows(device))    # no NaN: compare every bit
    # Small search chunks, strided over 2 or 3 programs per row: the integer atomics of a
    # row's histogram arrive from several programs, in another order with 3.
    blocks = dataclasses.replace(tk.default_blocks(100), bucket_chunk=8, bucket_tile=16,
                                 programs=2)
    for delta, exact in [(0.5, False), (0.5, True)]:
        first = tk.rank_sort_rows(scores, labels, delta, 0.0, exact, True, "bucketed",
                                  blocks=blocks)
        again = tk.rank_sort_rows(scores, labels, delta, 0.0, exact, True, "bucketed",
                                  blocks=blocks)
        other = tk.rank_sort_rows(scores, labels, delta, 0.0, exact, True, "bucketed",
                                  blocks=dataclasses.replace(blocks, programs=3))
        for a, b, c in zip(first, again, other):
            assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("device", DEVICES)
def test_delta_is_decided_as_the_kernels_see_it(device):
    # Triton passes δ as float32: a δ that is 0 in float32 must be 0 on the host too (δ = 0's
    # keys and launches), or the bucketed kernels would disagree on the number of keys.
    scores, labels = (t[:5] for t in _rows(device))
    assert tk.kernel_scalar(1e-46) == 0.0 and tk.kernel_scalar(0.1) == float(torch.tensor(0.1))
    tiny = tk.rank_sort_rows(scores, labels, 1e-46, 0.0, False, True, "bucketed", blocks=SMALL)
    zero = tk.rank_sort_rows(scores, labels, 0.0, 0.0, False, True, "bucketed", blocks=SMALL)
    assert all(torch.equal(a, b) for a, b in zip(tiny, zero))
    with pytest.raises(ValueError, match="delta"):
        tk.rank_sort_rows(scores, labels, 1e-46, 0.0, True, True, "bucketed", blocks=SMALL)


class _Spy:
    def __init__(self, kernel, log, name):
        self.kernel, self.log, self.name = kernel, log, name

    def __getitem__(self, grid):
        def launch(*args, **kw):
            self.log.append(self.name)
            return self.kernel[grid](*args, **kw)
        return launch


@pytest.mark.parametrize("device", DEVICES)
def test_launches(device, monkeypatch):
    log = []
    for mod, names in ((tk, ("_compact_kernel", "_pass_a_kernel", "_pass_b_kernel")),
                       (tb, ("_bucket_prep_kernel", "_bucket_search_kernel",
                             "_bucket_scan_kernel", "_bucket_coef_kernel",
                             "_bucket_grad_kernel"))):
        for name in names:
            monkeypatch.setattr(mod, name, _Spy(getattr(mod, name), log, name[1:-7]))
    scores, labels = random_rows(3, 40, seed=26, pos_frac=0.3, device=device)
    plain = tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True)
    assert log == ["compact", "pass_a", "pass_b"]
    log.clear()
    forced = tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True, "pairwise")
    assert log == ["compact", "pass_a", "pass_b"]
    assert all(torch.equal(a, b) for a, b in zip(plain, forced))
    log.clear()
    tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True, "auto")
    assert log == ["compact", "bucket_prep", "bucket_search", "bucket_scan", "pass_a",
                   "pass_b", "bucket_coef", "bucket_grad"]
    log.clear()
    tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, False, "bucketed")
    assert log == ["compact", "bucket_prep", "bucket_search", "bucket_scan", "pass_a", "pass_b"]
    with pytest.raises(ValueError, match="algorithm"):
        tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True, "fast")


# ---------------------------------------------------------------------------- GPU only


cuda_only = pytest.mark.skipif(not torch.cuda.is_available() or tk._INTERPRETED,
                               reason="needs a GPU and compiled kernels")


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("shape", ["vitpose", "hires", "large"])
def test_benchmark_shapes_match_torch_on_gpu(shape):
    from rspose_kernels.testing import shape_case
    pred, target, _ = shape_case(shape, regime="init", seed=27, device="cuda")
    scores, labels = pred.flatten(2).flatten(0, 1)[:8], target.flatten(2).flatten(0, 1)[:8]
    assert tk.bucketed_rows(scores, labels, 0.5, 0.0, "auto").any()
    for delta, exact in MODES:
        _check(scores, labels, delta, exact, "auto",
               tk.bucketed_rows(scores, labels, delta, 0.0, "auto").tolist(), blocks=None)


@cuda_only
@pytest.mark.cuda
def test_no_host_sync_on_gpu():
    scores, labels = random_rows(16, 3072, seed=28, pos_frac=0.05, device="cuda")
    want = tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True, "bucketed")   # compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = tk.rank_sort_rows(scores, labels, 0.5, 0.0, False, True, "bucketed")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.equal(a, b) for a, b in zip(got, want))
