"""Input generators shared by the tests and bench/run.py (fixed seeds, CPU-generated, then moved).

Heatmap targets follow mmpose's MSRA encoding: a unit-peak Gaussian at an integer centre,
truncated to the (6σ+1)² window, zero elsewhere; invisible keypoints have an all-zero target
and weight 0. SimCC targets are untruncated unit-peak 1D Gaussians.
"""
from __future__ import annotations

import math

import torch

# SPEC §8 shapes: name -> (B, K, H, W, sigma); for simcc H is the y bins and W the x bins.
SHAPES = {
    "vitpose": (64, 17, 64, 48, 2.0),
    "hires": (16, 17, 128, 96, 4.0),
    "large": (4, 17, 256, 192, 8.0),
    "simcc": (64, 17, 512, 384, 6.0),
}
REGIMES = ("init", "trained")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_rows(m, l, *, seed=0, pos_frac=0.25, ties=False, empty_rows=0, all_pos_rows=0,
                dtype=torch.float32, device="cpu", scale=1.0):
    """Random ranking rows: ``(scores [m, l] of dtype, labels [m, l] float32)``.

    Positives (a ``pos_frac`` share of each row) get a quality label in (0, 1]; the first
    ``empty_rows`` rows have none and the next ``all_pos_rows`` rows are all positive. With
    ``ties`` labels and scores are quantised to a few levels, so equal labels and equal
    scores (x_ij = 0, the H(0) case) occur often.
    """
    g = _gen(seed)
    scores = torch.randn(m, l, generator=g, dtype=torch.float64) * scale
    quality = torch.rand(m, l, generator=g, dtype=torch.float64) * 0.999 + 0.001
    pos = torch.rand(m, l, generator=g, dtype=torch.float64) < pos_frac
    if ties:
        quality = torch.ceil(quality * 4) / 4
        scores = torch.round(scores * 2) / 2
    pos[:empty_rows] = False
    pos[empty_rows:empty_rows + all_pos_rows] = True
    labels = torch.where(pos, quality, torch.zeros_like(quality))
    return scores.to(dtype=dtype, device=device), labels.to(dtype=torch.float32, device=device)


def gaussian_targets(b, k, h, w, sigma, *, seed=0, invisible=0.1, device="cpu"):
    """mmpose-style targets ``[b, k, h, w]`` and ``target_weight [b, k]`` (0 when invisible)."""
    g = _gen(seed)
    cx = torch.randint(0, w, (b, k), generator=g)
    cy = torch.randint(0, h, (b, k), generator=g)
    visible = torch.rand(b, k, generator=g) >= invisible
    radius = int(3 * sigma)
    xs = torch.arange(w).view(1, 1, 1, w)
    ys = torch.arange(h).view(1, 1, h, 1)
    dx = xs - cx.view(b, k, 1, 1)
    dy = ys - cy.view(b, k, 1, 1)
    gauss = torch.exp(-(dx.double() ** 2 + dy.double() ** 2) / (2 * sigma ** 2))
    window = (dx.abs() <= radius) & (dy.abs() <= radius) & visible.view(b, k, 1, 1)
    targets = torch.where(window, gauss, torch.zeros_like(gauss)).float()
    return targets.to(device), visible.float().to(device)


def _scores_for(targets, regime, g, pos_thr=0.0):
    noise = torch.randn(targets.shape, generator=g, dtype=torch.float64)
    if regime == "init":
        # An untrained head: nothing separates positives from negatives, nothing is prunable.
        return noise
    if regime == "trained":
        # A trained ranking head: positives lifted clear of the background, ordered by quality,
        # so almost every negative lies more than δ below the lowest positive (prunable).
        t = targets.double()
        return 3.0 * t + 1.5 * (t > pos_thr) + 0.1 * noise
    raise ValueError(f"regime: expected one of {REGIMES}, got {regime!r}")


def heatmap_case(b, k, h, w, sigma, *, regime="init", seed=0, dtype=torch.float32,
                 device="cpu", invisible=0.1):
    """``(heatmaps [b,k,h,w] of dtype, targets float32, target_weight [b,k])``."""
    targets, weight = gaussian_targets(b, k, h, w, sigma, seed=seed, invisible=invisible)
    scores = _scores_for(targets, regime, _gen(seed + 1))
    return scores.to(dtype=dtype, device=device), targets.to(device), weight.to(device)


def simcc_case(b, k, wx, hy, sigma, *, regime="init", seed=0, dtype=torch.float32,
               device="cpu", invisible=0.1):
    """``((x [b,k,wx], y [b,k,hy]) of dtype, (gx, gy) float32, target_weight [b,k])``.

    Targets are untruncated unit-peak Gaussians (mmpose's SimCC labels before normalising).
    """
    g = _gen(seed)
    visible = (torch.rand(b, k, generator=g) >= invisible).float()
    preds, targets = [], []
    for bins in (wx, hy):
        centre = torch.rand(b, k, 1, generator=g, dtype=torch.float64) * (bins - 1)
        pos = torch.arange(bins, dtype=torch.float64).view(1, 1, bins)
        t = torch.exp(-((pos - centre) ** 2) / (2 * sigma ** 2)) * visible.unsqueeze(-1)
        s = _scores_for(t, regime, g, pos_thr=math.exp(-4.5))
        preds.append(s.to(dtype=dtype, device=device))
        targets.append(t.float().to(device))
    return tuple(preds), tuple(targets), visible.to(device)


def shape_case(name, *, regime="init", seed=0, dtype=torch.float32, device="cpu"):
    """Inputs for a SPEC §8 shape: heatmap_case or simcc_case arguments filled in."""
    b, k, h, w, sigma = SHAPES[name]
    if name == "simcc":
        return simcc_case(b, k, w, h, sigma, regime=regime, seed=seed, dtype=dtype, device=device)
    return heatmap_case(b, k, h, w, sigma, regime=regime, seed=seed, dtype=dtype, device=device)


# Small random-row cases every backend's parity tests run (small enough for the Triton
# interpreter): name -> random_rows keyword arguments.
ROW_CASES = {
    "plain": dict(m=5, l=37, pos_frac=0.3),
    "ties": dict(m=4, l=29, ties=True, pos_frac=0.5),
    "empty_and_full_rows": dict(m=6, l=17, empty_rows=2, all_pos_rows=2),
    "single_element": dict(m=6, l=1, pos_frac=0.5),
    "no_rows": dict(m=0, l=9),
    "sparse_long": dict(m=2, l=300, pos_frac=0.05),
}
DELTAS = (0.0, 0.25, 0.5, 1.0)

# Per-dtype tolerances (rtol, atol) against the float64 reference evaluated on the same
# (rounded) scores: float32 is SPEC §4's bound; half types are limited by the gradient
# being returned in their own precision.
TOLERANCES = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (1e-4, 1e-6),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (5e-2, 1e-2),
}


def row_case(name, *, seed=0, dtype=torch.float32, device="cpu"):
    kw = dict(ROW_CASES[name])
    return random_rows(kw.pop("m"), kw.pop("l"), seed=seed, dtype=dtype, device=device, **kw)
