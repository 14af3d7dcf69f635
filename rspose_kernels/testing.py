"""Input generators shared by the tests and bench/run.py (fixed seeds, CPU-generated, then moved).

Heatmap targets follow mmpose's MSRA encoding: a unit-peak Gaussian at an integer centre,
truncated to the (6σ+1)² window, zero elsewhere; invisible keypoints have an all-zero target
and weight 0. SimCC targets are untruncated unit-peak 1D Gaussians.
"""
from __future__ import annotations

import torch

from . import defaults

# The benchmark shapes (docs/DESIGN.md §8): name -> (B, K, H, W, sigma); for simcc H is the
# y bins and W the x bins.
SHAPES = {
    "vitpose": (64, 17, 64, 48, 2.0),
    "hires": (16, 17, 128, 96, 4.0),
    "large": (4, 17, 256, 192, 8.0),
    "simcc": (64, 17, 512, 384, 6.0),
}
REGIMES = ("init", "trained")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_rows(m, l, *, seed=0, pos_frac=0.25, ties=False,  # noqa: E741 (l: row length)
                empty_rows=0, all_pos_rows=0, dtype=torch.float32, device="cpu", scale=1.0):
    """Random ranking rows, seeded.

    Args:
        m: the number of rows.
        l: the row length L.
        seed: the generator's seed (CPU generator; the result is then moved to ``device``).
        pos_frac: the expected share of positives in a row; they get a quality label in
            (0, 1], the negatives 0.
        ties: quantise labels and scores to a few levels, so equal labels and equal scores
            (x_ij = 0, the H(0) case) occur often.
        empty_rows: the first ``empty_rows`` rows have no positive.
        all_pos_rows: the next ``all_pos_rows`` rows are all positive.
        dtype: the scores' dtype.
        device: where the results go.
        scale: the standard deviation of the N(0, scale²) scores.

    Returns:
        ``(scores [m, l] of dtype, labels [m, l] float32)``.
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
    """mmpose-style heatmap targets: truncated unit-peak Gaussians at random integer centres.

    Args:
        b, k, h, w: batch, keypoints, heatmap height and width.
        sigma: the Gaussian's σ in pixels; it is truncated to the (6σ+1)² window.
        seed: the generator's seed.
        invisible: the probability that a keypoint is invisible (all-zero target, weight 0).
        device: where the results go.

    Returns:
        ``(targets [b, k, h, w] float32, target_weight [b, k] float32)``.
    """
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
                 device="cpu", invisible=0.1, pos_thr=None):
    """Heatmap scores with :func:`gaussian_targets`, for one regime.

    Args:
        b, k, h, w, sigma, seed, invisible: as :func:`gaussian_targets`.
        regime: "init" (scores ~ N(0, 1): an untrained head, nothing prunable) or "trained"
            (the scores of a head trained at ``pos_thr``: its positives lifted clear of the
            target pixels it ranks as negatives, ordered by quality; almost every negative
            prunable).
        dtype: the scores' dtype.
        device: where the results go.
        pos_thr: the τ of the trained regime; None: the pose-level
            ``defaults.HEATMAP_POS_THR``.

    Returns:
        ``(heatmaps [b, k, h, w] of dtype, targets float32, target_weight [b, k])``.

    Raises:
        ValueError: an unknown regime.
    """
    targets, weight = gaussian_targets(b, k, h, w, sigma, seed=seed, invisible=invisible)
    pos_thr = defaults.HEATMAP_POS_THR if pos_thr is None else pos_thr
    scores = _scores_for(targets, regime, _gen(seed + 1), pos_thr=pos_thr)
    return scores.to(dtype=dtype, device=device), targets.to(device), weight.to(device)


def simcc_case(b, k, wx, hy, sigma, *, regime="init", seed=0, dtype=torch.float32,
               device="cpu", invisible=0.1):
    """SimCC scores and labels, for one regime.

    Targets are untruncated unit-peak Gaussians at random real centres (mmpose's SimCC labels
    before normalising); an invisible keypoint has zero targets on both axes and weight 0.

    Args:
        b, k: batch and keypoints.
        wx, hy: the x and y bins.
        sigma: the labels' σ in bins.
        regime: "init" or "trained", as :func:`heatmap_case` (trained at the SimCC τ).
        seed, dtype, device, invisible: as :func:`heatmap_case`.

    Returns:
        ``((x [b, k, wx], y [b, k, hy]) of dtype, (gx, gy) float32, target_weight [b, k])``.

    Raises:
        ValueError: an unknown regime.
    """
    g = _gen(seed)
    visible = (torch.rand(b, k, generator=g) >= invisible).float()
    preds, targets = [], []
    for bins in (wx, hy):
        centre = torch.rand(b, k, 1, generator=g, dtype=torch.float64) * (bins - 1)
        pos = torch.arange(bins, dtype=torch.float64).view(1, 1, bins)
        t = torch.exp(-((pos - centre) ** 2) / (2 * sigma ** 2)) * visible.unsqueeze(-1)
        s = _scores_for(t, regime, g, pos_thr=defaults.SIMCC_POS_THR)
        preds.append(s.to(dtype=dtype, device=device))
        targets.append(t.float().to(device))
    return tuple(preds), tuple(targets), visible.to(device)


def shape_case(name, *, regime="init", seed=0, dtype=torch.float32, device="cpu",
               pos_thr=None):
    """Inputs for one of the benchmark shapes (``SHAPES``, docs/DESIGN.md §8).

    Args:
        name: a key of ``SHAPES``.
        regime, seed, dtype, device: as :func:`heatmap_case`.
        pos_thr: the heatmap τ of the trained regime (None: the pose-level one); SimCC
            always uses its own τ.

    Returns:
        What :func:`heatmap_case` returns, or :func:`simcc_case` for "simcc".

    Raises:
        KeyError: an unknown shape name.
        ValueError: an unknown regime.
    """
    b, k, h, w, sigma = SHAPES[name]
    if name == "simcc":
        return simcc_case(b, k, w, h, sigma, regime=regime, seed=seed, dtype=dtype, device=device)
    return heatmap_case(b, k, h, w, sigma, regime=regime, seed=seed, dtype=dtype, device=device,
                        pos_thr=pos_thr)


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

# Per-dtype tolerances (rtol, atol) of a result against a reference evaluated on the same
# (rounded) scores (the float64 loop, or the torch backend in the same accumulation dtype).
# A backend sums in the accumulation dtype (float32 for half scores,
# rspose_kernels.backends.accumulation_dtype), so everything it returns at the row level
# (rank, sort, the gradient before backward scales it) is held to that dtype's entry:
# float32 is the bound of docs/DESIGN.md §4 (summation order differs); float64's is far above
# its rounding (ε = 2.2e-16) and far below any real error.
#
# The half-precision entries are for a result rounded ONCE to half after that: the gradient
# the public API returns (ops.py: scaled in float32, then cast). With x the float32 value,
# |x − ref| ≤ 1e-4·|ref| + 1e-6 and round-to-nearest |fl(x) − x| ≤ u·|x| (+ half the subnormal
# spacing below the normal range), so |fl(x) − ref| ≤ ((1 + 1e-4)(1 + u) − 1)·|ref|
# + (1 + u)·1e-6 + spacing/2, with u = 2⁻¹¹ (float16; subnormal spacing 2⁻²⁴) and
# u = 2⁻⁸ (bfloat16; float32's exponent range, no subnormal term at these magnitudes).
# float16 then rejects a 0.1% error; bfloat16 cannot represent one (u ≈ 0.39%), which is why
# every half-score result is also checked before that rounding, at the float32 entry.
_F32_RTOL, _F32_ATOL = 1e-4, 1e-6
_UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
_SUBNORMAL_HALF_SPACING = {torch.float16: 2.0 ** -25, torch.bfloat16: 0.0}


def _rounded_once(dtype):
    u = _UNIT_ROUNDOFF[dtype]
    return ((1 + _F32_RTOL) * (1 + u) - 1,
            (1 + u) * _F32_ATOL + _SUBNORMAL_HALF_SPACING[dtype])


TOLERANCES = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (_F32_RTOL, _F32_ATOL),
    torch.float16: _rounded_once(torch.float16),    # ≈ (5.9e-4, 1.0e-6)
    torch.bfloat16: _rounded_once(torch.bfloat16),  # ≈ (4.0e-3, 1.0e-6)
}


def row_case(name, *, seed=0, dtype=torch.float32, device="cpu"):
    """The rows of ``ROW_CASES[name]``: :func:`random_rows` with that case's arguments.

    Returns:
        ``(scores [m, l] of dtype, labels [m, l] float32)``.

    Raises:
        KeyError: an unknown case name.
    """
    kw = dict(ROW_CASES[name])
    return random_rows(kw.pop("m"), kw.pop("l"), seed=seed, dtype=dtype, device=device, **kw)
