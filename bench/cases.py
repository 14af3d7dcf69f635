"""The microbenchmark's inputs: one case per shape and regime (docs/DESIGN.md §8), from
rspose_kernels.testing like the tests', with the rows the losses rank."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rspose_kernels.losses import DEFAULT_DELTA, HEATMAP_POS_THR, SIMCC_POS_THR
from rspose_kernels.testing import SHAPES, shape_case

# --quick on a CPU: (batch, keypoints) per shape, the first b items and k keypoints of the
# benchmark case, sized so that all shapes and regimes fit in seconds on 2 cores.
QUICK_SIZES = {"vitpose": (2, 17), "hires": (1, 4), "large": (1, 1), "simcc": (8, 17)}


@dataclass
class Case:
    """One shape and regime, ready to time.

    Attributes:
        pred: [B,K,H,W] tensor, or (x, y) for simcc; leaves requiring grad.
        groups: [(scores [m, L] detached, labels [m, L] as the loss sees them)].
        positives, pairs, rows: Σ|P|, Σ|P|·L and the number of rows over ``groups``.
    """
    shape: str
    regime: str
    batch: int
    keypoints: int
    pred: object
    target: object
    weight: torch.Tensor
    groups: list
    pos_thr: float
    delta: float = DEFAULT_DELTA
    positives: int = 0
    pairs: int = 0
    rows: int = 0

    @property
    def simcc(self) -> bool:
        return isinstance(self.pred, tuple)

    def leaves(self):
        return list(self.pred) if self.simcc else [self.pred]


def make_case(shape, regime, batch=None, keypoints=None, *, device="cpu",
              dtype=torch.float32, pos_thr=None, delta=None) -> Case:
    """The benchmark case of ``shape`` and ``regime``.

    Args:
        shape, regime: keys of ``rspose_kernels.testing.SHAPES`` / ``REGIMES``.
        batch, keypoints: cut to the first ``batch`` items and ``keypoints`` keypoints.
        device, dtype: of the scores.
        pos_thr: the heatmap τ (default the pose-level one, what spatial_rs_loss uses; the
            trained regime is trained at it); SimCC shapes keep SimCC's τ.
        delta: the ramp half-width δ the losses are called with (default the package's,
            ``rk.DEFAULT_DELTA``); the inputs do not depend on it.

    Returns:
        A :class:`Case`.
    """
    b_full, k_full = SHAPES[shape][:2]
    b = b_full if batch is None else min(batch, b_full)
    k = k_full if keypoints is None else min(keypoints, k_full)
    heat_thr = HEATMAP_POS_THR if pos_thr is None else float(pos_thr)
    pred, target, weight = shape_case(shape, regime=regime, dtype=dtype, device=device,
                                      pos_thr=heat_thr)

    def cut(t):
        return t[:b, :k].contiguous()

    weight = cut(weight)
    if isinstance(pred, tuple):
        pred = tuple(cut(p).requires_grad_(True) for p in pred)
        target = tuple(cut(t) for t in target)
        pos_thr = SIMCC_POS_THR
        groups = []
        for p, t in zip(pred, target):
            # simcc_rs_loss ranks against targets rescaled to peak 1
            peak = t.amax(-1, keepdim=True)
            t = t / torch.where(peak > 0, peak, torch.ones_like(peak))
            groups.append((p.detach().reshape(-1, p.shape[-1]), t.reshape(-1, t.shape[-1])))
    else:
        pred = cut(pred).requires_grad_(True)
        target = cut(target)
        pos_thr = heat_thr
        length = pred.shape[-1] * pred.shape[-2]
        groups = [(pred.detach().reshape(-1, length), target.reshape(-1, length))]
    delta = DEFAULT_DELTA if delta is None else float(delta)
    case = Case(shape, regime, b, k, pred, target, weight, groups, pos_thr, delta)
    for _, labels in groups:
        npos = int((labels > pos_thr).sum())
        case.positives += npos
        case.pairs += npos * labels.shape[1]
        case.rows += labels.shape[0]
    return case


def estimate_pairs(shape, batch, keypoints) -> float:
    """Rough pair count before the inputs exist (progress-bar weights only)."""
    b_full, k_full, h, w, sigma = SHAPES[shape]
    rows = min(batch or b_full, b_full) * min(keypoints or k_full, k_full) * 0.9
    window = 6 * sigma + 1
    if shape == "simcc":
        return rows * window * (h + w)
    return rows * min(window ** 2, h * w) * h * w
