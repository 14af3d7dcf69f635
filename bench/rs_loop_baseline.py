"""Baseline: Rank & Sort the way the public Rank & Sort loss code computes it.

That code (Oksuz et al., written for object detection) is an autograd.Function whose forward
loops in Python over the positives and, for each one, evaluates the smoothed step against the
whole (pruned) set of elements in a few vectorised torch ops, accumulating the identity-update
gradient (docs/DESIGN.md §2) as it goes; backward only scales the stored gradient. It prunes
once, before the loop, the negatives below ``min positive score − δ``, and branches on the host
(``if F > eps``), i.e. one device sync per positive on a GPU. This file re-implements that
scheme per row (the rows of docs/DESIGN.md §2: one heatmap or one SimCC vector) so that
``python3 -m bench.run`` can show what the package replaces. Written from the definition in
docs/DESIGN.md §2; not a copy of the public code.
"""
from __future__ import annotations

import torch

from rspose_kernels.backends import EPS


def _step(x: torch.Tensor, delta: float) -> torch.Tensor:
    if delta > 0:
        return torch.clamp(x / (2 * delta) + 0.5, min=0, max=1)
    return (x >= 0).to(x.dtype)


def row_rank_sort(s: torch.Tensor, y: torch.Tensor, delta: float, pos_thr: float,
                  limit: int | None = None):
    """One row: (rank, sort, grad [L], |P|) with the identity-update gradient, one positive at a
    time.

    ``s`` and ``y`` are 1-D and detached. Empty rows give zeros. ``limit`` stops the loop after
    that many positives (for timing a sample only: the values are then partial sums).
    """
    grad = torch.zeros_like(s)
    pos_idx = torch.nonzero(y > pos_thr).flatten()
    n = pos_idx.numel()
    if n == 0:
        zero = s.new_zeros(())
        return zero, zero, grad, 0
    s_pos, y_pos = s[pos_idx], y[pos_idx]
    # Pruning as in the public code: a negative more than δ below every positive never counts.
    neg_idx = torch.nonzero((y <= pos_thr) & (s >= s_pos.min() - delta)).flatten()
    s_neg = s[neg_idx]
    quality_gap = 1 - y_pos
    grad_pos = torch.zeros_like(s_pos)
    grad_neg = torch.zeros_like(s_neg)
    rank_sum = s.new_zeros(())
    sort_sum = s.new_zeros(())
    for i in range(n if limit is None else min(n, limit)):
        h_neg = _step(s_neg - s_pos[i], delta)
        h_pos = _step(s_pos - s_pos[i], delta)
        fp_count = h_neg.sum()
        a_mass = h_pos.sum()
        rank_error = fp_count / (a_mass + fp_count)
        upper = y_pos >= y_pos[i]
        h_upper = h_pos * upper
        sort_error = ((h_pos * quality_gap).sum() / a_mass
                      - (h_upper * quality_gap).sum() / h_upper.sum())
        rank_sum += rank_error
        sort_sum += sort_error
        if fp_count > EPS:  # host branch, like the public code
            grad_pos[i] -= rank_error
            grad_neg += h_neg * (rank_error / fp_count)
        h_lower = h_pos * ~upper
        z_mass = h_lower.sum()
        if z_mass > EPS:
            grad_pos[i] -= sort_error
            grad_pos += h_lower * (sort_error / z_mass)
    grad[pos_idx] = grad_pos / n
    grad[neg_idx] = grad_neg / n
    return rank_sum / n, sort_sum / n, grad, n


class _LoopRankSort(torch.autograd.Function):
    """Mean over non-empty rows of rank + sort; the gradient is computed in forward."""

    @staticmethod
    def forward(ctx, scores, labels, delta, pos_thr, limits):
        s = scores.detach().float()
        y = labels.detach().float()
        grad = torch.zeros_like(s)
        total = s.new_zeros(())
        valid = 0
        for r in range(s.shape[0]):
            limit = None if limits is None else limits[r]
            rank, sort, grad[r], n = row_rank_sort(s[r], y[r], delta, pos_thr, limit)
            if n:
                total += rank + sort
                valid += 1
        valid = max(valid, 1)
        ctx.save_for_backward((grad / valid).to(scores.dtype))
        return total / valid

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None


def loop_rank_sort_loss(scores: torch.Tensor, labels: torch.Tensor, *, delta: float = 0.5,
                        pos_thr: float = 0.0, limits: list[int] | None = None) -> torch.Tensor:
    """Rows ``[M, L]`` -> scalar loss (mean over non-empty rows), identity-update gradient.

    ``limits[r]`` (optional) caps the positives looped over in row r: the benchmark times a
    sample of positives that way and extrapolates.
    """
    return _LoopRankSort.apply(scores, labels, float(delta), float(pos_thr), limits)
