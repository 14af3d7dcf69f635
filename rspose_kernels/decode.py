"""Decoding heads trained with the ranking losses: keypoint locations and confidences.

A head trained with Rank & Sort outputs *logits*: the loss depends on differences of scores
within a row (and, through Instance-Sort, of row maxima across keypoints), never on their
level. Decoders built for MSE heatmaps in [0, 1] misread them: mmpose's
``get_heatmap_maximum`` / ``get_simcc_maximum`` mark a keypoint whose maximum is ≤ 0 as
missing (location −1), and ``UDPHeatmap`` takes ``log(clip(heatmap, 1e-3, 50))``, which is
flat for a peak below 1e-3. These functions decode logits for what they are:

- location: the arg-max, refined by one DARK step (Zhang et al., "Distribution-Aware
  Coordinate Representation", CVPR 2020) on ``exp(logit − max)``: the peak's distribution
  up to a constant, blurred by a Gaussian of the target's σ, in log space, one Newton step
  towards the maximum of its quadratic model. The step is taken only where the quadratic has a
  maximum (negative-definite Hessian) and is clamped to one pixel: a flat logit peak has a
  near-singular Hessian and an unclamped step would jump across the map;
- confidence: ``softplus(max logit) = log(1 + e^max)``, a monotone map of the maximum to
  (0, ∞): the logit itself where it is clearly positive (where a trained head's maxima lie)
  and a small positive score below, so mmpose's ``keypoint_score_thr`` and its
  box score × mean keypoint score rescoring apply to it. ``sigmoid`` would squeeze a
  trained head's maxima together, leaving the rescoring to rank by box score alone
  (docs/MEASUREMENTS.md, "Confidence of logit heads").

``logits=False`` decodes MSE-style heatmaps (probabilities) with the same DARK step on the
heatmap itself (mmpose's DARK) and the raw maximum as confidence, so one function serves
both kinds of head. Everything is batched torch, on any device, with no host sync.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import checks

__all__ = ["decode_heatmaps", "decode_simcc", "gaussian_kernel"]

_LOG_FLOOR = 1e-10   # log(0) guard on the blurred distribution (as mmpose's DARK)


def gaussian_kernel(sigma: float, dtype=torch.float32, device=None) -> Tensor:
    """A normalised 1-D Gaussian, the blur of the DARK step.

    Args:
        sigma: standard deviation > 0, in pixels (bins).
        dtype: the kernel's dtype.
        device: the kernel's device (None: the default).

    Returns:
        A 1-D tensor of ``2·ceil(3σ) − 1`` taps (at least 3) summing to 1: 11 for σ = 2,
        mmpose's DARK kernel for its 256 × 192 configs.

    Raises:
        ValueError: sigma is not a finite number > 0.
    """
    checks.number("sigma", sigma, minimum=0, strict=True)
    radius = max(1, math.ceil(3 * sigma) - 1)
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    return k / k.sum()


def _distribution(scores: Tensor, logits: bool) -> Tensor:
    """Rows as a non-negative distribution whose log the Taylor step models."""
    if logits:
        return torch.exp(scores - scores.amax(-1, keepdim=True))
    return scores.clamp_min(0)


def _blur_rows(p: Tensor, kernel: Tensor) -> Tensor:
    """Separable blur of [N, L] rows (zero padding), rescaled to keep each row's maximum,
    as mmpose's ``gaussian_blur``."""
    r = kernel.numel() // 2
    out = F.conv1d(p[:, None], kernel.view(1, 1, -1), padding=r)[:, 0]
    return out * (p.amax(-1, keepdim=True) / out.amax(-1, keepdim=True).clamp_min(1e-30))


def _blur_maps(p: Tensor, kernel: Tensor) -> Tensor:
    """Separable blur of [N, H, W] maps (zero padding), keeping each map's maximum."""
    r = kernel.numel() // 2
    x = p[:, None]
    x = F.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, r))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1), padding=(r, 0))[:, 0]
    peak = p.flatten(1).amax(-1)[:, None, None]
    return x * (peak / x.flatten(1).amax(-1)[:, None, None].clamp_min(1e-30))


def _newton_2d(logp: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """One Newton step on [N, H, W] log-maps at integer (x, y): the [N, 2] offset, zero where
    the local quadratic has no maximum or the 3×3 neighbourhood leaves the map."""
    n, h, w = logp.shape
    pad = F.pad(logp[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    xi, yi = x + 1, y + 1                           # indices into the padded map

    def at(dx, dy):
        flat = pad.flatten(1)
        return flat.gather(1, ((yi + dy) * (w + 2) + (xi + dx))[:, None])[:, 0]

    c = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = at(1, 0) - 2 * c + at(-1, 0)
    hyy = at(0, 1) - 2 * c + at(0, -1)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    ok = (det > 0) & (hxx < 0) & (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(hxx * gy - hxy * gx) / safe
    off = torch.stack([ox, oy], -1).clamp(-1, 1)
    return torch.where(ok[:, None], off, torch.zeros_like(off))


def _newton_1d(logp: Tensor, i: Tensor) -> Tensor:
    """One Newton step on [N, L] log-rows at integer i: the [N] offset (0 where no maximum)."""
    n, length = logp.shape
    pad = F.pad(logp[:, None], (1, 1), mode="replicate")[:, 0]
    c = pad.gather(1, (i + 1)[:, None])[:, 0]
    lo = pad.gather(1, i[:, None])[:, 0]
    hi = pad.gather(1, (i + 2)[:, None])[:, 0]
    g, hh = 0.5 * (hi - lo), hi - 2 * c + lo
    ok = (hh < 0) & (i > 0) & (i < length - 1)
    off = (-g / torch.where(ok, hh, -torch.ones_like(hh))).clamp(-1, 1)
    return torch.where(ok, off, torch.zeros_like(off))


SCORES = ("sigmoid", "softplus", "max")


def _confidence(peak: Tensor, logits: bool, score: str) -> Tensor:
    if not logits or score == "max":
        return peak
    return torch.sigmoid(peak) if score == "sigmoid" else F.softplus(peak)


def decode_heatmaps(heatmaps: Tensor, *, sigma: float = 2.0, logits: bool = True,
                    refine: bool = True, score: str = "softplus") -> tuple[Tensor, Tensor]:
    """Keypoints and confidences from heatmaps.

    Args:
        heatmaps: ``[..., H, W]`` scores (logits when ``logits``; probabilities otherwise).
        sigma: the Gaussian σ of the training targets, in heatmap pixels (the blur).
        logits: the head outputs logits (trained with this package's losses): refine
            ``exp(logit − max)`` and map the maximum by ``score``; False: refine the heatmap
            itself and report its maximum (MSE heads, mmpose's DARK).
        refine: take the DARK step; False gives the integer arg-max.
        score: the confidence of a logit head: "softplus" (default), "sigmoid" or "max"
            (the raw logit).

    Returns:
        ``(keypoints [..., 2], scores [...])``: (x, y) in heatmap pixels (pixel centres at
        integers; multiply by the codec's scale for input pixels) and confidences, float32
        (float64 for float64 input). Never −1: every heatmap has an arg-max.

    Raises:
        TypeError: heatmaps is not a tensor.
        ValueError: heatmaps not floating or of fewer than 2 dims, sigma ≤ 0, or an unknown
            score.
    """
    checks.tensor("heatmaps", heatmaps, min_dim=2)
    checks.number("sigma", sigma, minimum=0, strict=True)
    checks.choice("score", score, SCORES)
    lead, (h, w) = heatmaps.shape[:-2], heatmaps.shape[-2:]
    dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
    maps = heatmaps.reshape(-1, h, w).to(dtype)
    peak, idx = maps.flatten(1).max(-1)
    x, y = idx % w, torch.div(idx, w, rounding_mode="floor")
    xy = torch.stack([x, y], -1).to(dtype)
    if refine and maps.shape[0] > 0:
        p = _distribution(maps.flatten(1), logits).view_as(maps)
        p = _blur_maps(p, gaussian_kernel(sigma, dtype, maps.device))
        xy = xy + _newton_2d(torch.log(p.clamp_min(_LOG_FLOOR)), x, y)
    return xy.view(*lead, 2), _confidence(peak, logits, score).view(lead)


def decode_simcc(simcc_x: Tensor, simcc_y: Tensor, *, sigma: float | tuple = 6.0,
                 logits: bool = True, refine: bool = True,
                 score: str = "softplus") -> tuple[Tensor, Tensor]:
    """Keypoints and confidences from SimCC x / y bin scores.

    Args:
        simcc_x, simcc_y: ``[..., Wx]`` and ``[..., Hy]`` scores with the same leading dims.
        sigma: the label σ in bins (one number, or (σx, σy)), for the blur.
        logits, refine, score: as in ``decode_heatmaps``; the 1-D DARK step on each axis.

    Returns:
        ``(keypoints [..., 2], scores [...])``: (x, y) in bins (divide by the split ratio for
        input pixels); the score is that of the weaker axis, ``min(max x, max y)`` mapped as
        in ``decode_heatmaps`` (mmpose's ``get_simcc_maximum`` takes the same minimum).

    Raises:
        TypeError: simcc_x or simcc_y is not a tensor.
        ValueError: not floating, mismatched leading dims, an unknown score, or a sigma
            that is not one number or a pair of numbers > 0.
    """
    checks.tensor("simcc_x", simcc_x, min_dim=1)
    checks.tensor("simcc_y", simcc_y, min_dim=1)
    checks.choice("score", score, SCORES)
    if simcc_x.shape[:-1] != simcc_y.shape[:-1]:
        raise ValueError(f"simcc_y: expected the leading dims of simcc_x "
                         f"{tuple(simcc_x.shape[:-1])}, got {tuple(simcc_y.shape[:-1])}")
    if isinstance(sigma, (tuple, list)) and len(sigma) != 2:
        raise ValueError(f"sigma: expected one number or a pair (σx, σy), got {sigma!r}")
    sx, sy = (sigma, sigma) if not isinstance(sigma, (tuple, list)) else sigma
    checks.number("sigma", sx, minimum=0, strict=True)
    checks.number("sigma", sy, minimum=0, strict=True)
    lead = simcc_x.shape[:-1]
    dtype = torch.float64 if torch.float64 in (simcc_x.dtype, simcc_y.dtype) else torch.float32
    locs, peaks = [], []
    for scores, s in ((simcc_x, sx), (simcc_y, sy)):
        rows = scores.reshape(-1, scores.shape[-1]).to(dtype)
        peak, i = rows.max(-1)
        loc = i.to(dtype)
        if refine and rows.shape[0] > 0:
            p = _blur_rows(_distribution(rows, logits), gaussian_kernel(s, dtype, rows.device))
            loc = loc + _newton_1d(torch.log(p.clamp_min(_LOG_FLOOR)), i)
        locs.append(loc)
        peaks.append(peak)
    xy = torch.stack(locs, -1).view(*lead, 2)
    return xy, _confidence(torch.minimum(*peaks), logits, score).view(lead)
