"""Inputs that the contract suite and a backend's own tests share (the generators behind them
are rspose_kernels.testing's, which the benchmark shares too)."""
import math

from rspose_kernels.testing import random_rows


def non_finite_rows(device="cpu"):
    """``(scores [5, 40], labels)``: row 0 clean; row 1 a NaN negative (its rank is NaN, its
    sort is not); row 2 a NaN positive (both NaN); row 3 a -inf negative, pruned (finite);
    row 4 a +inf negative, above every positive (finite, but not prunable)."""
    scores, labels = random_rows(5, 40, seed=8, pos_frac=0.3, device=device)

    def first(row, positive):
        return int(((labels[row] > 0) == positive).nonzero()[0, 0])

    scores[1, first(1, False)] = math.nan
    scores[2, first(2, True)] = math.nan
    scores[3, first(3, False)] = -math.inf
    scores[4, first(4, False)] = math.inf
    return scores, labels
