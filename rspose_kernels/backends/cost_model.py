"""The per-row choice between the pairwise and the bucketed algorithm (docs/MATH.md,
"Choosing per row"; SPEC §5b) — the one place that decides which rows go where.

A row with n positives and ñ negatives left after pruning costs the pairwise algorithm
n·ñ positive-negative and n² positive-positive pair evaluations, and the bucketed one
~log2(2n) steps per element (bucket search, histogram and Fenwick updates). In units of a
positive-negative pair:

    bucketed  iff  n ≥ 2  and  n·(ñ + positive_pairs·n) >
                               log2(2n)·(per_negative·ñ + per_positive·n) + bucketed_positive_pairs·n²

(the last term for the CUDA kernels, whose bucketed path keeps the positive-positive terms on
pass A/B's P×P tiles and replaces only the positive-negative ones; 0 for CPU and torch).

The constants are per backend, fitted with bench/run.py (``--calibrate``); the C++ kernel
evaluates the
same formula with the same constants (``prefers_bucketed`` in
csrc/rank_sort_bucketed_math.h, which the tests check against this one). The torch backend's
pairwise code (torch_ref) does not prune, so for it ñ is every negative of the row.

Rows holding a non-finite score that survives pruning always go pairwise: NaN and ±inf then
propagate exactly as the definition says (a band sum would make inf − inf), and rows with
|s| ≥ 2^1000 (float64 score differences could overflow). So do rows whose δ does not resolve
at their scores' scale, δ < RESOLVE · max|s| (e.g. δ = 1e-14 on O(1) logits):
a band sum (Σs − s_i·Σ1)/(2δ) rounds like |s|/δ, where pairwise evaluates H per pair. δ = 0
(the step) has no such division.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch

from . import accumulation_dtype

# The C++ kernel uses the same bound (0x1p-20, csrc/cpu/rank_sort_cpu.cpp).
RESOLVE = 2.0 ** -20


class CostModel(NamedTuple):
    per_negative: float     # one negative's bucketed work, per log2(2n) step
    per_positive: float     # one positive's bucketed work, per log2(2n) step
    positive_pairs: float   # a positive-positive pair of the pairwise code
    bucketed_positive_pairs: float = 0.0   # ... that the bucketed path still evaluates


# Fitted on the 2-core CPU machine by
#   python bench/run.py --providers cpu/pairwise,cpu/bucketed --cpu-time --calibrate
# (SPEC sizes, one thread, process time; per step 1.69 ns per negative and 12.2 ns per
# positive against 0.218 ns per positive-negative pair; docs/MATH.md, "Choosing per row").
COSTS = {
    "cpu": CostModel(per_negative=7.75, per_positive=56.1, positive_pairs=1.17),
    # The torch code's per-call overheads swamp a fit at the sizes a CPU can time it on;
    # set by hand from `--cpu-time` runs at the SPEC sizes: bucketed was 1.8–4× faster than
    # torch_ref on every heatmap shape, and 0.75–1.25× on simcc (n ≈ 37, L = 384/512; two
    # runs disagreed), which these constants leave to the pairwise reference.
    "torch": CostModel(per_negative=10.0, per_positive=10.0, positive_pairs=1.0),
    # NOT MEASURED YET (no GPU has run the bucketed kernels): set from the kernels' shape. A
    # negative costs one binary search over the 2n keys (log2(2n) dependent L1 loads), two
    # integer atomics and one gather for its gradient, against ~3 instructions per pair in
    # pass A/B's register tiles (docs/GPU_RESOURCES.md): ~4 pairs per search step. Per
    # positive: the bitonic sort (log2 n stages) and its scans. The positive pairs are the
    # same tiles in both paths. bench/cuda_sweep.py sweeps per_negative
    # (RSPOSE_CUDA_BUCKET_COST) on a GPU; with these values the SPEC shapes' init rows (n ≥ 37)
    # go bucketed and the trained ones (ñ ≈ 0) stay pairwise.
    "cuda": CostModel(per_negative=4.0, per_positive=16.0, positive_pairs=1.0,
                      bucketed_positive_pairs=1.0),
    # NOT MEASURED YET either: the Triton twin of the CUDA bucketed path
    # (backends/triton_bucketed.py: the same hybrid, P×P positive terms kept), so the CUDA
    # values until bench/run.py times both on a GPU.
    "triton": CostModel(per_negative=4.0, per_positive=16.0, positive_pairs=1.0,
                        bucketed_positive_pairs=1.0),
}


def cuda_costs() -> CostModel:
    """The CUDA cost model, with per_negative from RSPOSE_CUDA_BUCKET_COST when set (the
    per-row threshold bench/cuda_sweep.py sweeps). Read at each call, like native.py's other
    RSPOSE_CUDA_* knobs."""
    cost = COSTS["cuda"]
    value = os.environ.get("RSPOSE_CUDA_BUCKET_COST")
    if value is None:
        return cost
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise ValueError(f"RSPOSE_CUDA_BUCKET_COST: expected a positive number, got {value!r}")
    return cost._replace(per_negative=v)


def prefers_bucketed(n: torch.Tensor, nn: torch.Tensor, cost: CostModel) -> torch.Tensor:
    """Per row, whether ``auto`` takes the bucketed algorithm (n, nn: integer tensors)."""
    n = n.to(torch.float64)
    nn = nn.to(torch.float64)
    steps = torch.log2(2 * n.clamp(min=1))
    pairwise = n * (nn + cost.positive_pairs * n)
    bucketed = (steps * (cost.per_negative * nn + cost.per_positive * n)
                + cost.bucketed_positive_pairs * n * n)
    return (n >= 2) & (pairwise > bucketed)


def plan_rows(scores: torch.Tensor, labels: torch.Tensor, delta: float, pos_thr: float,
              algorithm: str, backend: str) -> torch.Tensor:
    """Bool [M]: the rows ``backend`` computes with the bucketed algorithm (what the torch
    backend splits by; for cpu and cuda, whose kernels choose for themselves, the same rule
    evaluated on the host, for the benchmark's reports).

    ``algorithm`` is "bucketed" (every row with finite unpruned scores) or "auto".
    """
    pos = labels > pos_thr
    n = pos.sum(1)
    inf = torch.full((), torch.inf, dtype=scores.dtype, device=scores.device)
    smin = torch.where(pos, scores, inf).amin(1, keepdim=True)
    live = pos | ~(scores < smin - delta)          # not prunable (a NaN never prunes)
    finite = ~(live & ~torch.isfinite(scores)).any(1)
    take = finite & (n > 0)
    span = torch.where(live, scores.abs(), torch.zeros_like(scores)).amax(1)
    take &= span < 2.0 ** 1000          # no score difference can overflow a double
    if delta > 0:
        take &= delta >= RESOLVE * span
    if backend == "cuda":   # rows whose positives do not fit the kernel's sort stay pairwise
        take &= n <= cuda_max_positives(scores.shape[1], scores.dtype)
    if backend == "triton":   # ... likewise, and float64 rows are pairwise there
        from . import triton_bucketed as tb
        take &= n <= tb.max_positives(scores.shape[1])
        take &= tb.supports(accumulation_dtype(scores.dtype))
    if algorithm == "auto":
        # The torch pairwise code evaluates every negative: its ñ is L − n.
        nn = (~pos).sum(1) if backend == "torch" else (live & ~pos).sum(1)
        take &= prefers_bucketed(n, nn, cuda_costs() if backend == "cuda" else COSTS[backend])
    return take


def cuda_max_positives(length: int, dtype: torch.dtype) -> int:
    """The most positives a row of ``length`` may have for the CUDA bucketed path (its sort
    in shared memory and its workspace; csrc/cuda's np_cap, asked of _C)."""
    from . import native   # imported here: native imports this module
    return native._C.cuda_max_positives(length, native._DTYPE_CODE[dtype])
