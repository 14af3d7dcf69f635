"""Instance-Sort and RSPoseLoss (docs/DESIGN.md §3) as slow loops over keypoints and pixels,
float64: the spatial part runs the per-positive loop of ``tests.reference.loop`` on each row
with its masked pixels removed. Only the pose-level τ default comes from the package
(rspose_kernels/defaults.py, pinned by tests/test_defaults.py).
"""
import math

import torch

from rspose_kernels.defaults import HEATMAP_POS_THR

from . import loop

# COCO's OKS sigmas, typed from the COCO keypoint evaluation definition.
COCO = [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]
COCO = [v / 10 for v in COCO]
EPS = 1e-10


def first_argmax(values):
    """Index of the first maximum of a flat list (NaN wins, like torch.argmax)."""
    best = 0
    for i, v in enumerate(values):
        if math.isnan(v):
            return i
        if v > values[best]:
            best = i
    return best


def step(x, delta):
    if delta > 0:
        return min(max(x / (2 * delta) + 0.5, 0.0), 1.0)
    return 1.0 if x >= 0 else 0.0


def sort_loop(scores, quality, delta):
    """Mean sorting error over all items (all positives, no negatives) and its
    identity-update gradient, one item at a time."""
    n = len(scores)
    grad = [0.0] * n
    if n == 0:
        return 0.0, grad
    errors = []
    for i in range(n):
        h = [step(scores[j] - scores[i], delta) for j in range(n)]
        a = sum(h)
        current = sum(h[j] * (1 - quality[j]) for j in range(n)) / a
        upper = [j for j in range(n) if quality[j] >= quality[i]]
        target = sum(h[j] * (1 - quality[j]) for j in upper) / sum(h[j] for j in upper)
        e = current - target
        errors.append(e)
        lower = [h[j] if quality[j] < quality[i] else 0.0 for j in range(n)]
        z = sum(lower)
        if z > EPS:
            grad[i] -= e
            for j in range(n):
                grad[j] += lower[j] * e / z
    return sum(errors) / n, [g / n for g in grad]


def oks(d2, area, sigma):
    return max(math.exp(-d2 / (2 * area * (2 * sigma) ** 2)), 1e-6)


# The pose-level τ the public functions default to (test_defaults.py pins its value).
POS_THR = HEATMAP_POS_THR


def ref_instance_sort(heat, target, weight=None, *, delta=0.5, sigmas=None, area=None,
                      pos_thr=POS_THR):
    """(loss, gradient on heat) of Instance-Sort, by loops over keypoints and pixels."""
    b_, k_, h_, w_ = heat.shape
    if sigmas is None:
        sigmas = COCO if k_ == 17 else [0.07] * k_
    areas = [h_ * w_ / 1.25 ** 2] * b_ if area is None else (
        [float(area)] * b_ if not torch.is_tensor(area) else [float(a) for a in area])
    scores, quality, where = [], [], []
    for b in range(b_):
        for k in range(k_):
            t = target[b, k].double().flatten().tolist()
            if (weight is not None and float(weight[b, k]) <= 0) or max(t) <= pos_thr:
                continue
            hm = heat[b, k].double().flatten().tolist()
            p, g = first_argmax(hm), first_argmax(t)
            d2 = (p // w_ - g // w_) ** 2 + (p % w_ - g % w_) ** 2
            scores.append(hm[p])
            quality.append(oks(d2, areas[b], sigmas[k]))
            where.append((b, k, p // w_, p % w_))
    loss, g = sort_loop(scores, quality, delta)
    grad = torch.zeros(heat.shape, dtype=torch.float64)
    for gi, (b, k, y, x) in zip(g, where):
        grad[b, k, y, x] += gi
    return loss, grad


def ref_simcc_instance_sort(px, py, gx, gy, weight=None, *, delta=0.5, sigmas=None):
    b_, k_, wx = px.shape
    hy = py.shape[-1]
    sigmas = sigmas or (COCO if k_ == 17 else [0.07] * k_)
    area = wx * hy / 1.25 ** 2
    scores, quality, where = [], [], []
    for b in range(b_):
        for k in range(k_):
            tx, ty = gx[b, k].tolist(), gy[b, k].tolist()
            if (weight is not None and float(weight[b, k]) <= 0) or max(tx) <= 0 \
                    or max(ty) <= 0:
                continue
            sx, sy = px[b, k].double().tolist(), py[b, k].double().tolist()
            ix, iy = first_argmax(sx), first_argmax(sy)
            d2 = (ix - first_argmax(tx)) ** 2 + (iy - first_argmax(ty)) ** 2
            use_x = sx[ix] <= sy[iy]
            scores.append(sx[ix] if use_x else sy[iy])
            quality.append(oks(d2, area, sigmas[k]))
            where.append((b, k, "x" if use_x else "y", ix if use_x else iy))
    loss, g = sort_loop(scores, quality, delta)
    grad_x = torch.zeros(px.shape, dtype=torch.float64)
    grad_y = torch.zeros(py.shape, dtype=torch.float64)
    for gi, (b, k, axis, i) in zip(g, where):
        (grad_x if axis == "x" else grad_y)[b, k, i] += gi
    return loss, grad_x, grad_y


def ref_rows(scores, labels, weight, valid, delta, pos_thr, grad_mode="identity"):
    """Weighted mean of rank + sort over rows [M, L], each row restricted to its valid
    pixels, and its identity-update (or exact: autograd of the loop) gradient."""
    total, denom = 0.0, 0.0
    grad = torch.zeros(scores.shape, dtype=torch.float64)
    rows = []
    for r in range(scores.shape[0]):
        keep = valid[r]
        s, y = scores[r].double()[keep], labels[r].double()[keep]
        w = float(weight[r])
        if s.numel() == 0 or not (y > pos_thr).any():
            continue
        rank, sort = loop.row_loss(s, y, delta, pos_thr)
        total += w * float(rank + sort)
        denom += w if w > 0 else 0.0
        if grad_mode == "exact":
            leaf = s.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(sum(loop.row_loss(leaf, y, delta, pos_thr)), leaf)
        else:
            g = loop.row_identity_grad(s, y, delta, pos_thr)
        rows.append((r, keep, w, g))
    denom = denom if denom > 0 else 1.0
    for r, keep, w, g in rows:
        grad[r, keep] = w * g / denom
    return total / denom, grad


def ref_rspose_heatmap(heat, target, weight, mask, *, instance_weight=1.0, loss_weight=1.0,
                       delta=0.5, pos_thr=POS_THR, sigmas=None, area=None):
    b, k, h, w = heat.shape
    valid = torch.ones(b, k, h, w, dtype=torch.bool) if mask is None else \
        (mask != 0).expand(b, k, h, w)
    weight = torch.ones(b, k) if weight is None else weight
    spatial, g_spatial = ref_rows(heat.reshape(b * k, -1), target.reshape(b * k, -1),
                                  weight.reshape(-1), valid.reshape(b * k, -1), delta, pos_thr)
    # Masked pixels leave Instance-Sort too: its maximum and target peak are over valid pixels.
    inst_heat = torch.where(valid, heat.double(), torch.tensor(-math.inf, dtype=torch.float64))
    inst_target = torch.where(valid, target.double(), torch.zeros((), dtype=torch.float64))
    inst, g_inst = ref_instance_sort(inst_heat, inst_target, weight, delta=delta,
                                     pos_thr=pos_thr, sigmas=sigmas, area=area)
    g_spatial = g_spatial.reshape(heat.shape)
    return (loss_weight * (spatial + instance_weight * inst),
            loss_weight * (g_spatial + instance_weight * g_inst))


def ref_rspose_simcc(px, py, gx, gy, weight, *, instance_weight=1.0, delta=0.5,
                     grad_mode="identity"):
    """weight None: every row weighs 1 and every keypoint with both targets non-zero is an
    item (use_target_weight=False)."""
    thr = math.exp(-4.5)
    parts = []
    for p, t in ((px, gx), (py, gy)):
        t = t / t.amax(-1, keepdim=True).clamp_min(1e-30)
        b, k, n = p.shape
        w = torch.ones(b * k) if weight is None else weight.reshape(-1)
        parts.append(ref_rows(p.reshape(b * k, n), t.reshape(b * k, n), w,
                              torch.ones(b * k, n, dtype=torch.bool), delta, thr, grad_mode))
    inst, gix, giy = ref_simcc_instance_sort(px, py, gx, gy, weight, delta=delta)
    loss = (parts[0][0] + parts[1][0]) / 2 + instance_weight * inst
    grad_x = parts[0][1].reshape(px.shape) / 2 + instance_weight * gix
    grad_y = parts[1][1].reshape(py.shape) / 2 + instance_weight * giy
    return loss, grad_x, grad_y
