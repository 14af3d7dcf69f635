"""The per-row choice between the pairwise and the bucketed algorithm (docs/MATH.md,
"Choosing per row"; docs/DESIGN.md §5b): the rule, its constants, and host-side row counts.

A leaf: it knows no backend. Each backend passes its own cost constants, capacity and
whether it prunes (``plan_rows``); the compiled kernels evaluate the same rule with the same
constants (``takes_bucketed`` and ``prefers_bucketed`` in csrc/rank_sort_bucketed_math.h),
and the Triton compaction with the constants below (backends/triton_pairwise.py).

A row with n positives and ñ negatives left after pruning costs the pairwise algorithm
n·ñ positive-negative and n² positive-positive pair evaluations, and the bucketed one
~log2(2n) steps per element (bucket search, histogram and Fenwick updates). In units of a
positive-negative pair:

    bucketed  iff  n ≥ 2  and
        n·(ñ + positive_pairs·n) > log2(2n)·(per_negative·ñ + per_positive·n)
                                   + bucketed_positive_pairs·n²

(the last term for the GPU kernels, whose bucketed path keeps the positive-positive terms on
the pairwise P×P tiles and replaces only the positive-negative ones; 0 for CPU and torch).

A row may go bucketed at all only when (``row_counts``'s ``eligible``) it has a positive, no
non-finite score survives pruning (NaN and ±inf then propagate exactly as the definition
says; a band sum would make inf − inf), its live scores are below SPAN_LIMIT in magnitude
(float64 score differences could overflow) and δ resolves at their scale, δ ≥ RESOLVE·max|s|
(a band sum (Σs − s_i·Σ1)/(2δ) rounds like |s|/δ, where pairwise evaluates H per pair; δ = 0,
the step, has no such division).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

RESOLVE = 2.0 ** -20      # smallest δ / max|s| a bucketed row may have
SPAN_LIMIT = 2.0 ** 1000  # largest max|s| a bucketed row may have


class CostModel(NamedTuple):
    per_negative: float     # one negative's bucketed work, per log2(2n) step
    per_positive: float     # one positive's bucketed work, per log2(2n) step
    positive_pairs: float   # a positive-positive pair of the pairwise code
    bucketed_positive_pairs: float = 0.0   # ... that the bucketed path still evaluates


class RowCounts(NamedTuple):
    n: torch.Tensor         # int [M]: positives
    nn: torch.Tensor        # int [M]: negatives the pairwise code evaluates (after pruning)
    eligible: torch.Tensor  # bool [M]: may go bucketed at all (see the module docstring)


def prefers_bucketed(n: torch.Tensor, nn: torch.Tensor, cost: CostModel) -> torch.Tensor:
    """Per row, whether the cost model prefers the bucketed algorithm.

    Args:
        n: integer tensor, positives per row.
        nn: integer tensor, negatives per row that the pairwise code evaluates.
        cost: the backend's constants.

    Returns:
        A bool tensor shaped like ``n``.
    """
    n = n.to(torch.float64)
    nn = nn.to(torch.float64)
    steps = torch.log2(2 * n.clamp(min=1))
    pairwise = n * (nn + cost.positive_pairs * n)
    bucketed = (steps * (cost.per_negative * nn + cost.per_positive * n)
                + cost.bucketed_positive_pairs * n * n)
    return (n >= 2) & (pairwise > bucketed)


def row_counts(scores: torch.Tensor, labels: torch.Tensor, delta: float, pos_thr: float,
               prunes: bool = True) -> RowCounts:
    """Per row of ``scores`` [M, L]: positives, evaluated negatives, and eligibility.

    Args:
        scores, labels: [M, L] tensors (labels > ``pos_thr`` are the positives).
        delta: the ramp half-width δ ≥ 0.
        pos_thr: the positive threshold τ.
        prunes: whether the backend's pairwise code prunes the negatives below
            min positive − δ (the kernels do; the torch reference evaluates every negative).

    Returns:
        :class:`RowCounts`.
    """
    pos = labels > pos_thr
    n = pos.sum(1)
    if scores.shape[1] == 0:   # no element: nothing to count, nothing to take (amin needs one)
        return RowCounts(n, n, n > 0)
    inf = torch.full((), torch.inf, dtype=scores.dtype, device=scores.device)
    smin = torch.where(pos, scores, inf).amin(1, keepdim=True)
    live = pos | ~(scores < smin - delta)          # not prunable (a NaN never prunes)
    finite = ~(live & ~torch.isfinite(scores)).any(1)
    span = torch.where(live, scores.abs(), torch.zeros_like(scores)).amax(1)
    eligible = finite & (n > 0) & (span < SPAN_LIMIT)
    if delta > 0:
        eligible &= delta >= RESOLVE * span
    nn = ((live if prunes else torch.ones_like(live)) & ~pos).sum(1)
    return RowCounts(n, nn, eligible)


def plan_rows(scores: torch.Tensor, labels: torch.Tensor, delta: float, pos_thr: float,
              algorithm: str, cost: CostModel, max_positives: int, supported: bool = True,
              prunes: bool = True) -> torch.Tensor:
    """The rows a backend computes bucketed.

    Args:
        scores, labels, delta, pos_thr, prunes: as :func:`row_counts`.
        algorithm: "bucketed" (every eligible row that fits) or "auto" (and preferred by
            ``cost``).
        cost: the backend's cost constants.
        max_positives: the backend's capacity; rows with more positives stay pairwise.
        supported: False where the backend has no bucketed path for these inputs (e.g.
            Triton's float64 rows): no row goes bucketed.

    Returns:
        A bool tensor [M].
    """
    counts = row_counts(scores, labels, delta, pos_thr, prunes)
    take = counts.eligible & (counts.n <= max_positives)
    if not supported:
        take &= False
    if algorithm == "auto":
        take &= prefers_bucketed(counts.n, counts.nn, cost)
    return take
