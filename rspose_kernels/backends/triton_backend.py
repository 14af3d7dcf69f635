"""The `triton` backend: the Rank & Sort core (docs/DESIGN.md §2, §5) as three Triton kernels.

Every sum, coefficient and threshold is the one of docs/MATH.md. One call launches:

1. ``_compact_kernel``, one program per row. A first sweep counts the positives and finds the
   pruning bound ``s_min − δ``; a second sweep compacts the row, with ``tl.cumsum`` giving each
   element its slot: the positives in slots ``[0, n)`` (score, label, original index), then the
   negatives that are *not* pruned in ``[n, n + n_keep)`` (score, index). A pruned negative
   gets its gradient, 0, written here and is never looked at again.
2. ``_pass_a_kernel``, programs ``(row, g)``; each walks the row's blocks of ``BP`` positives
   ``g, g + G, ...`` (bounds loaded from ``npos``; no host branch on data). ``BP`` and ``BL``
   are the row's own: ``a_pos`` and ``a_neg``, or half and twice them (the same registers),
   chosen on the device from the row's counts for the fewer padded lanes (``_a_shift``,
   ``pass_a_tile``), so a row of 20 positives is not padded to 64. Per block it
   streams the unpruned negatives in tiles of ``BL`` into one ``[BP, BL]`` register
   accumulator (F; and the count behind F' in exact mode), then the positives in tiles of
   ``BL2`` for T, Z, C, D (and A', C', T', D'). It writes the per-positive coefficients of
   pass B (identity: r, q, self; exact: ∂F, ∂A, ∂C, ∂T, ∂D, self) and the block's Σ ℓR and
   Σ eS into its own slot of a partial-sum buffer.
3. ``_pass_b_kernel``, programs ``(row, p)``: program ``(row, 0)`` also sums the partials in
   block order into ``rank`` and ``sort``. With a gradient, programs ``p < NBN`` walk blocks
   of unpruned negatives and stream all positives (``g_j = Σ_i H(x_ij) r_i``, or
   ``Σ_i H'(x_ij) ∂F_i``); the others walk blocks of positives and stream all positives (the
   P×P part with its self term). Each writes ``g / n`` to the element's original index.

With ``algorithm="bucketed"`` or ``"auto"`` (float32 accumulation; float64 rows stay
pairwise), the compaction also chooses each row's algorithm on the device (docs/DESIGN.md §5b, the
rules of the CUDA backend) and gives a bucketed row ``n_keep = 0``, so the passes above sweep
only its positives; triton_bucketed.py's kernels supply its F (F') to pass A and its
negatives' gradient after pass B. ``"pairwise"`` launches the three kernels above only.

Every output element is written by exactly one program and every sum is reduced in a fixed
order: no atomics, bitwise-identical results run after run. The grid depends on M, L and
the SM count only; which program handles a block never changes its arithmetic, so results do
not depend on the SM count either. Extra memory: 24 B (identity) or 36 B (exact) per element
of the [M, L] input, in float32 (twice for float64).

float64 scores are supported natively (accumulated in float64, the labels' dtype); δ and τ
reach the kernels as float32 scalars, exact for the usual values (0, 0.25, 0.5, 1).

Block sizes are fixed per row length (no autotuning: an autotuner's pick can differ from one
process to the next, and a different tile changes the summation order, so results would not
be bitwise reproducible across runs).
"""
from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass

import torch
import triton

from . import ALGORITHM_CODES, Backend, cost_model
from . import sm_count as _sm_count
from . import triton_bucketed as tb
from .triton_pairwise import _INTERPRETED, _compact_kernel, _pass_a_kernel, _pass_b_kernel


def is_available(device_type: str) -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available()
    if device_type == "cpu":
        # CPU tensors run only under the interpreter (TRITON_INTERPRET=1 when triton.jit ran).
        return _INTERPRETED
    return False


# ----------------------------------------------------------------------------- launcher


@dataclass(frozen=True)
class Blocks:
    """Tile sizes (powers of two) and programs per row; ``programs=None``: from the SM count."""
    compact: int = 1024     # elements per compaction tile
    compact_warps: int = 4
    a_pos: int = 64         # pass A: positives per block (one program's rows of pairs)
    a_neg: int = 32         # pass A: negatives per tile
    a_pp: int = 8           # pass A: positives per tile of the P×P sweep
    b_neg: int = 128        # pass B: negatives per block
    b_neg_pos: int = 8      # pass B: positives per tile against a negative block
    b_pos: int = 32         # pass B: positives per block
    b_pos_pos: int = 8      # pass B: positives per tile against a positive block
    warps: int = 4
    programs: int | None = None
    bucket_chunk: int = 1024    # bucketed rows: negatives per search / gradient chunk
    bucket_tile: int = 1024     # bucketed rows: tile of the per-row scans


def default_blocks(length: int, acc_dtype: torch.dtype = torch.float32) -> Blocks:
    """Tiles for a row length (and accumulation dtype): a shape always gets the same arithmetic.

    Chosen from the sm_90 machine code (no GPU timing yet): the largest tiles that keep pass A
    and pass B in registers without spills (docs/MEASUREMENTS.md, "triton tile sizes"). Long
    rows get a wide compaction tile: one program per row streams it twice.

    Args:
        length: the row length L.
        acc_dtype: the accumulation dtype (float64 rows get a smaller pass-B tile).

    Returns:
        A :class:`Blocks`.
    """
    if length <= 1024:      # SimCC vectors (384, 512 bins): ~37 positives, short rows
        return Blocks(compact=max(16, min(1024, triton.next_power_of_2(length))),
                      a_pos=16, a_neg=64, b_neg=64, b_neg_pos=16, b_pos=16, b_pos_pos=16)
    compact, compact_warps = (2048, 8) if length > 8192 else (1024, 4)
    if acc_dtype == torch.float64:
        # Half pass A's positive block: the float32 one does not fit in registers in float64
        # (docs/MEASUREMENTS.md, "triton tile sizes").
        return Blocks(compact=compact, compact_warps=compact_warps, a_pos=32)
    return Blocks(compact=compact, compact_warps=compact_warps)




def min_pass_a_block(cfg: Blocks) -> int:
    """The smallest block of positives pass A may use for a row (triton_pairwise._a_shift:
    ``a_pos // 2`` when that is at least 2)."""
    return cfg.a_pos // 2 if cfg.a_pos >= 4 else cfg.a_pos


def pass_a_lanes(n, n_keep, block, tile, cfg: Blocks):
    """Lanes of pass A's tiles for rows of ``n`` positives and ``n_keep`` kept negatives in
    blocks of ``block`` positives against tiles of ``tile`` negatives (triton_pairwise._a_lanes
    on the host): padded positives × (padded negatives + padded positives)."""
    return -(-n // block) * block * (-(-n_keep // tile) * tile + -(-n // cfg.a_pp) * cfg.a_pp)


def pass_a_tile(n, n_keep, cfg: Blocks):
    """Per row, pass A's (positives per block, negatives per tile): triton_pairwise._a_shift's
    choice on the host, from integer tensors of the rows' positives and kept negatives."""
    full = (torch.full_like(n, cfg.a_pos), torch.full_like(n, cfg.a_neg))
    if cfg.a_pos < 4:
        return full
    half = (pass_a_lanes(n, n_keep, cfg.a_pos // 2, cfg.a_neg * 2, cfg)
            < pass_a_lanes(n, n_keep, cfg.a_pos, cfg.a_neg, cfg))
    return (torch.where(half, cfg.a_pos // 2, full[0]), torch.where(half, cfg.a_neg * 2, full[1]))


def _multiprocessors(device: torch.device) -> int:
    """SMs of the tensors' device (1 on CPU); tests/gpu_resources.py sets it per target."""
    if device.type != "cuda":
        return 1
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _programs_per_row(m: int, blocks_per_row: int, sms: int, override) -> int:
    """Programs per row for a strided loop over a row's blocks: ~32 per SM in all."""
    if override is not None:
        return max(1, min(blocks_per_row, override))
    return max(1, min(blocks_per_row, triton.cdiv(32 * sms, max(m, 1)), 16384))


# Not measured on a GPU yet: the CUDA kernels' values (backends/native.py), as the bucketed
# path here is the same hybrid (P×P positive terms kept on the pairwise tiles).
COST = cost_model.CostModel(per_negative=4.0, per_positive=16.0, positive_pairs=1.0,
                            bucketed_positive_pairs=1.0)


def _choice_args(algorithm: str, length: int, acc: torch.dtype):
    """The compaction's choice arguments: (algorithm code, capacity, cost constants)."""
    return (ALGORITHM_CODES[algorithm], tb.max_positives(length), float(COST.per_negative),
            float(COST.per_positive), float(COST.positive_pairs),
            float(COST.bucketed_positive_pairs))


def _takes_buckets(algorithm: str, acc: torch.dtype) -> bool:
    # float64 rows stay pairwise here (triton_bucketed.py: they do not pack into a sort key).
    if algorithm not in ALGORITHM_CODES:
        raise ValueError(f"algorithm: expected one of {list(ALGORITHM_CODES)}, got {algorithm!r}")
    return algorithm != "pairwise" and tb.supports(acc)


def bucketed_plan(scores, labels, delta, pos_thr, algorithm="auto"):
    """The rows a call takes bucketed, by the host-side rule with this backend's limits (the
    compaction chooses the same rows on the device: ``bucketed_rows``)."""
    return cost_model.plan_rows(scores, labels, kernel_scalar(delta), pos_thr, algorithm, COST,
                                max_positives=tb.max_positives(scores.shape[1]),
                                supported=tb.supports(labels.dtype))


def rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad, algorithm="pairwise", *,
                   blocks: Blocks | None = None):
    """The backend contract of rspose_kernels.backends; ``blocks`` overrides the tiles (tests).

    ``algorithm`` "bucketed" / "auto": rows chosen on the device take triton_bucketed's
    positive-negative terms; "pairwise" launches exactly the three pairwise kernels."""
    delta = kernel_scalar(delta)
    if exact and not delta > 0:
        raise ValueError(f"delta: the exact gradient needs delta > 0, got {delta}")
    scores = scores.contiguous()
    labels = labels.contiguous()
    m, length = scores.shape
    acc = labels.dtype
    dev = scores.device
    if m == 0 or length == 0:
        return (torch.zeros(m, dtype=acc, device=dev), torch.zeros(m, dtype=acc, device=dev),
                torch.zeros(m, dtype=torch.int32, device=dev),
                torch.zeros((m, length) if need_grad else (0,), dtype=acc, device=dev))
    # Every element of these is written by exactly one program.
    rank = torch.empty(m, dtype=acc, device=dev)
    sort = torch.empty(m, dtype=acc, device=dev)
    npos = torch.empty(m, dtype=torch.int32, device=dev)
    grad = torch.empty((m, length) if need_grad else (0,), dtype=acc, device=dev)

    cfg = blocks or default_blocks(length, acc)
    exact = bool(exact and need_grad)          # the forward is the same in both modes
    delta_zero = delta == 0.0
    half_inv = 0.5 / delta if delta > 0 else 0.0
    n_coef = 6 if exact else 3
    nbp = triton.cdiv(length, min_pass_a_block(cfg))   # partial slots: the smallest tile's

    key = torch.empty((m, length), dtype=acc, device=dev)
    plab = torch.empty((m, length), dtype=acc, device=dev)
    idx = torch.empty((m, length), dtype=torch.int32, device=dev)
    nkeep = torch.empty(m, dtype=torch.int32, device=dev)
    part = torch.empty((m, 2, nbp), dtype=acc, device=dev)
    coef = torch.empty((m, n_coef, length) if need_grad else (1,), dtype=acc, device=dev)
    grad_arg = grad if need_grad else part     # never written when need_grad is False

    buckets = _takes_buckets(algorithm, acc)
    ws = tb.workspace(m, length, exact, need_grad, dev) if buckets else None
    choice = _choice_args(algorithm, length, acc) if buckets else (0, 0, 0.0, 0.0, 0.0, 0.0)
    bucket_kw = dict(chunk=cfg.bucket_chunk, tile=cfg.bucket_tile, programs=cfg.programs)

    nw = cfg.warps
    sms = _multiprocessors(dev)
    with _on_device(dev):
        _compact_kernel[(m,)](
            scores, labels, key, idx, plab, grad_arg, npos, nkeep,
            ws.bsel if buckets else npos, length, float(pos_thr), delta, *choice,
            BLOCK=cfg.compact, WRITE_GRAD=need_grad, CHOOSE=buckets,
            num_warps=cfg.compact_warps)
        if buckets:
            tb.launch_histogram(ws, key, npos, m, length, delta, exact, sms=sms, **bucket_kw)
        ga = _programs_per_row(m, nbp, sms, cfg.programs)
        _pass_a_kernel[(m, ga)](
            key, plab, coef, part, npos, nkeep, ws.bsel if buckets else npos,
            ws.fb if buckets else key, ws.fbd if buckets else key, length, nbp,
            ws.np_ if buckets else 0, delta, half_inv,
            BP=cfg.a_pos, BL=cfg.a_neg, BL2=cfg.a_pp,
            DELTA_ZERO=delta_zero, EXACT=exact, NEED_GRAD=need_grad, BUCKETS=buckets,
            num_warps=nw)
        if need_grad:
            nbn = _programs_per_row(m, triton.cdiv(length, cfg.b_neg), sms, cfg.programs)
            nbj = _programs_per_row(m, triton.cdiv(length, cfg.b_pos), sms, cfg.programs)
        else:
            nbn, nbj = 1, 0
        _pass_b_kernel[(m, nbn + nbj)](
            key, plab, idx, coef, part, npos, nkeep, grad_arg, rank, sort,
            length, nbp, nbn, delta, half_inv,
            BPA=cfg.a_pos, BLA=cfg.a_neg, BL2A=cfg.a_pp, FB=64, BN=cfg.b_neg, BNI=cfg.b_neg_pos,
            BJ=cfg.b_pos, BJI=cfg.b_pos_pos,
            DELTA_ZERO=delta_zero, EXACT=exact, NEED_GRAD=need_grad, num_warps=nw)
        if buckets and need_grad:
            tb.launch_gradient(ws, key, idx, npos, coef, grad, m, length, delta, exact, sms=sms,
                               **bucket_kw)
    return rank, sort, npos, grad


def kernel_scalar(x: float) -> float:
    """``x`` as the kernels see it: Triton passes a Python float as float32. The host's own
    branches (δ = 0, exact mode's δ > 0) must decide on that value, or a δ below float32's
    range (1e-46) would be 0 on the device and not on the host; under the interpreter
    (float64 scalars) it also makes the kernels compute with the GPU's δ."""
    return ctypes.c_float(float(x)).value   # round to float32 (no tensor per call)


def bucketed_rows(scores, labels, delta, pos_thr, algorithm="auto", *,
                  blocks: Blocks | None = None):
    """Bool [M]: the rows ``rank_sort_rows(..., algorithm=algorithm)`` computes bucketed, as
    its compaction chooses them on the device (tests and the benchmark's reports)."""
    delta = kernel_scalar(delta)
    scores = scores.contiguous()
    labels = labels.contiguous()
    m, length = scores.shape
    acc = labels.dtype
    if m == 0 or length == 0 or not _takes_buckets(algorithm, acc):
        return torch.zeros(m, dtype=torch.bool, device=scores.device)
    cfg = blocks or default_blocks(length, acc)
    key = torch.empty((m, length), dtype=acc, device=scores.device)
    plab = torch.empty_like(key)
    idx = torch.empty((m, length), dtype=torch.int32, device=scores.device)
    npos = torch.empty(m, dtype=torch.int32, device=scores.device)
    nkeep = torch.empty_like(npos)
    bsel = torch.empty_like(npos)
    with _on_device(scores.device):
        _compact_kernel[(m,)](
            scores, labels, key, idx, plab, key, npos, nkeep, bsel, length, float(pos_thr),
            float(delta), *_choice_args(algorithm, length, acc), BLOCK=cfg.compact,
            WRITE_GRAD=False, CHOOSE=True, num_warps=cfg.compact_warps)
    return bsel >= 0


def row_stats(scores, labels, delta, pos_thr, *, blocks: Blocks | None = None):
    """``(npos, nkeep)`` per row: the positives, and the negatives that survive pruning.

    The kernels evaluate ``n·(n + nkeep)`` pairs per row in pass A and as many in pass B
    (bench/run.py's pair count; tests check pruning with it).
    """
    scores = scores.contiguous()
    labels = labels.contiguous()
    m, length = scores.shape
    acc = labels.dtype
    npos = torch.zeros(m, dtype=torch.int32, device=scores.device)
    nkeep = torch.zeros(m, dtype=torch.int32, device=scores.device)
    if m == 0 or length == 0:
        return npos, nkeep
    cfg = blocks or default_blocks(length, acc)
    key = torch.empty((m, length), dtype=acc, device=scores.device)
    plab = torch.empty_like(key)
    idx = torch.empty((m, length), dtype=torch.int32, device=scores.device)
    with _on_device(scores.device):
        _compact_kernel[(m,)](
            scores, labels, key, idx, plab, key, npos, nkeep, npos, length, float(pos_thr),
            float(delta), 0, 0, 0.0, 0.0, 0.0, 0.0, BLOCK=cfg.compact, WRITE_GRAD=False,
            CHOOSE=False, num_warps=cfg.compact_warps)
    return npos, nkeep


def _on_device(dev: torch.device):
    # Triton launches on the current CUDA device; make it the tensors' one.
    if dev.type == "cuda":
        return torch.cuda.device(dev)
    return contextlib.nullcontext()


BACKENDS = (Backend(name="triton", devices=("cpu", "cuda"), algorithms=("pairwise", "bucketed"),
                    is_available=is_available, rank_sort_rows=rank_sort_rows,
                    bucketed_plan=bucketed_plan),)
