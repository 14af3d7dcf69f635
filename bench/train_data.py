"""A procedural, seeded top-down keypoint data set for bench/train.py (docs/DESIGN.md §11).

Each sample is a top-down crop of one synthetic person: 17 keypoints on the COCO skeleton
(so COCO's sigmas apply) from a random articulated pose — torso lean, head tilt and yaw,
arm and leg angles, limb lengths — under random rotation, foreshortening, scale and box
jitter. It is drawn as coloured limbs and joint markers (one colour per keypoint, so left and
right are distinguishable) on a noisy textured background. What makes some keypoints
genuinely hard, so that a model's confidence *should* vary:

- self-occlusion: face keypoints turned away by the head's yaw are not drawn;
- occluders: textured rectangles covering parts of the person;
- truncation: the crop is sometimes shifted so that keypoints leave the frame;
- distractor limbs: limbs (with joint markers) of "other people" behind or in front.

Hidden keypoints stay labelled with COCO visibility 1 (labelled, not visible), drawn ones get
2, so the evaluator counts them all, as COCO counts occluded keypoints.

Targets are made as mmpose's codecs make them: ``MSRAHeatmap`` (unit-peak Gaussian at the
rounded heatmap position, truncated to its (6σ+1)² window; weight 0 when the window misses
the heatmap or the keypoint is unlabelled) and ``SimCCLabel`` (Gaussian labels over
``split_ratio``× bins, normalised by σ√(2π); same weight rule).

Every batch is a pure function of ``(seed, index)``: train batches are ``(seed, step)``, the
validation set comes from a seed no training run uses.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

K = 17
KEYPOINT_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                  "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                  "right_ankle")
# COCO's skeleton (0-based): legs, hips, torso, arms, face.
SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
            (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5),
            (4, 6))
FACE_LIMBS = frozenset(i for i, (a, b) in enumerate(SKELETON) if max(a, b) <= 4)
ARM_LEG_LIMBS = (0, 1, 2, 3, 8, 9, 10, 11)   # what a distractor limb is a copy of
VAL_SEED = 1_000_003                          # training seeds are small integers


def _palette():
    # Evenly spaced hues, interleaved so that a left/right pair gets far-apart colours.
    order = [0, 6, 12, 3, 9, 1, 7, 13, 4, 10, 2, 8, 14, 5, 11, 15, 16]
    cols = [colorsys.hsv_to_rgb(order[k] / K, 0.85, 0.95) for k in range(K)]
    return torch.tensor(cols, dtype=torch.float32)


KEYPOINT_COLOURS = _palette()                                       # [K, 3]
LIMB_COLOURS = torch.stack([0.7 * (KEYPOINT_COLOURS[a] + KEYPOINT_COLOURS[b]) / 2
                            for a, b in SKELETON])                  # [L, 3]


@dataclass(frozen=True)
class DataConfig:
    """Sizes of the task. Input ``width × height`` (W/H = 3/4 as mmpose's 192×256)."""
    width: int = 48
    height: int = 64
    heatmap_stride: int = 2          # heatmap 24 × 32
    heatmap_sigma: float = 1.0       # mmpose: σ 2 on a 48 × 64 heatmap; ours is half that
    simcc_split_ratio: float = 2.0   # as mmpose's SimCC configs
    simcc_sigma: float = 1.5         # mmpose: σ 6 bins for 192 × 256 input; ours is 1/4 of it
    occluder_prob: float = 0.5
    truncation_prob: float = 0.25
    max_distractors: int = 3

    @property
    def input_label(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def heatmap_size(self):
        return self.width // self.heatmap_stride, self.height // self.heatmap_stride

    @property
    def simcc_bins(self):
        return (round(self.width * self.simcc_split_ratio),
                round(self.height * self.simcc_split_ratio))


# ----------------------------------------------------------------------------- geometry

def _rot(v, angle):
    """Rotate [..., 2] vectors by ``angle`` [...] (image coordinates, y down)."""
    c, s = torch.cos(angle), torch.sin(angle)
    x, y = v[..., 0], v[..., 1]
    return torch.stack([x * c - y * s, x * s + y * c], -1)


def _uniform(g, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _pose(g, n):
    """Canonical poses in body units (height ≈ 1, y down): keypoints [n, K, 2] and a mask
    [n, K] of face keypoints turned away from the camera (self-occluded)."""
    u = lambda lo, hi: _uniform(g, n, lo, hi)  # noqa: E731
    kp = torch.zeros(n, K, 2)
    lean = u(-0.35, 0.35)
    up = torch.stack([torch.sin(lean), -torch.cos(lean)], -1)        # pelvis -> neck
    side = torch.stack([torch.cos(lean), torch.sin(lean)], -1)       # towards the person's left
    pelvis = torch.zeros(n, 2)
    neck = pelvis + 0.30 * u(0.9, 1.1)[:, None] * up
    shoulder, hip = u(0.09, 0.13)[:, None], u(0.06, 0.09)[:, None]
    kp[:, 5], kp[:, 6] = neck + shoulder * side, neck - shoulder * side
    kp[:, 11], kp[:, 12] = pelvis + hip * side, pelvis - hip * side

    # Head: features on a circle of radius r around the head centre, turned by the yaw; one
    # whose depth points away from the camera is hidden.
    tilt = u(-0.4, 0.4)
    head_up, head_side = _rot(up, tilt), _rot(side, tilt)
    head = neck + 0.11 * head_up
    yaw = u(-1.3, 1.3)
    r = 0.055
    hidden = torch.zeros(n, K, dtype=torch.bool)
    #             nose   l_eye  r_eye  l_ear  r_ear: angle on the head circle, height
    face = ((0.0, -0.01), (0.45, 0.018), (-0.45, 0.018), (1.45, 0.004), (-1.45, 0.004))
    for k, (alpha, height) in enumerate(face):
        a = alpha + yaw
        kp[:, k] = head + (r * torch.sin(a))[:, None] * head_side + height * head_up
        hidden[:, k] = torch.cos(a) < -0.15

    down = -up
    for sign, (sho, elb, wri) in ((1.0, (5, 7, 9)), (-1.0, (6, 8, 10))):
        d1 = _rot(down, -sign * u(-0.3, 2.8))
        kp[:, elb] = kp[:, sho] + 0.15 * u(0.85, 1.15)[:, None] * d1
        d2 = _rot(d1, u(-2.3, 2.3))
        kp[:, wri] = kp[:, elb] + 0.13 * u(0.85, 1.15)[:, None] * d2
    for sign, (hp, kn, an) in ((1.0, (11, 13, 15)), (-1.0, (12, 14, 16))):
        d1 = _rot(down, -sign * u(-0.25, 1.0))
        kp[:, kn] = kp[:, hp] + 0.22 * u(0.85, 1.15)[:, None] * d1
        d2 = _rot(d1, sign * u(-1.2, 1.2))
        kp[:, an] = kp[:, kn] + 0.22 * u(0.85, 1.15)[:, None] * d2

    # Whole body: foreshortening (the body turning), then an in-plane rotation.
    centre = kp.mean(1, keepdim=True)
    kp = kp - centre
    kp[..., 0] *= u(0.6, 1.0)[:, None]
    kp = _rot(kp, u(-0.5, 0.5)[:, None].expand(n, K))
    return kp, hidden


def _crop(g, kp, cfg: DataConfig):
    """Top-down crop as mmpose makes it from a (jittered) box: the keypoints' box, fixed to
    the input's aspect ratio, padded by 1.25 and jittered (shift, scale; a far shift for a
    truncated crop). Returns keypoints in input pixels [n, K, 2], the person box [n, 4]
    (x, y, w, h) in input pixels and the pixels per body unit [n, 2]."""
    n = kp.shape[0]
    lo, hi = kp.min(1).values, kp.max(1).values
    centre, size = (lo + hi) / 2, (hi - lo)
    aspect = cfg.width / cfg.height
    w = torch.maximum(size[:, 0], size[:, 1] * aspect)
    box = torch.stack([w, w / aspect], -1) * 1.05             # a little room around the joints
    shift = 0.05 * torch.randn(n, 2, generator=g)
    trunc = torch.rand(n, generator=g) < cfg.truncation_prob
    angle = _uniform(g, n, 0, 2 * math.pi)
    far = _uniform(g, n, 0.15, 0.35)[:, None] * torch.stack([angle.cos(), angle.sin()], -1)
    shift = torch.where(trunc[:, None], far, shift)
    scale = _uniform(g, n, 0.85, 1.2)[:, None]
    crop = box * 1.25 * scale
    crop_centre = centre + shift * box
    frame = torch.tensor([cfg.width, cfg.height], dtype=kp.dtype)
    # pixel centres at integers: the frame spans [-0.5, W - 0.5]
    def to_px(p):
        return (p - crop_centre[:, None]) / crop[:, None] * frame + (frame - 1) / 2

    keypoints = to_px(kp)
    box_px = box / crop * frame
    box_xy = to_px(centre[:, None])[:, 0] - box_px / 2
    return keypoints, torch.cat([box_xy, box_px], -1), frame / crop


def _segment_masks(grid, a, b, half_width):
    """Anti-aliased masks [n, S, H, W] of segments a→b [n, S, 2] of half-width [n, S]."""
    # x and y as separate planes: torch is slow at reductions over a trailing dim of size 2
    gx, gy = grid[..., 0], grid[..., 1]
    ax, ay = a[..., 0, None, None], a[..., 1, None, None]
    abx, aby = (b - a)[..., 0, None, None], (b - a)[..., 1, None, None]
    apx, apy = gx - ax, gy - ay
    t = ((apx * abx + apy * aby) / (abx * abx + aby * aby).clamp_min(1e-9)).clamp_(0, 1)
    dist = torch.hypot(apx.sub_(t * abx), apy.sub_(t * aby))
    return dist.neg_().add_(half_width[..., None, None] + 0.5).clamp_(0, 1)


def _person_segments(keypoints, hidden, order, limb_hw, marker_r):
    """A person as segments in paint order: its limbs in ``order`` (face links thinner; a
    limb to a hidden face keypoint is hidden with it), then the markers of its keypoints.

    keypoints [..., K, 2], hidden [..., K], order [L] (shared) or [..., L], limb_hw and
    marker_r [...] (pixels). Returns segment starts and stops [..., L + K, 2], half-widths
    [..., L + K], colours [..., L + K, 3] and on [..., L + K] (1 drawn, 0 hidden)."""
    dev = keypoints.device
    batch = keypoints.shape[:-2]
    order = order.to(dev).expand(*batch, len(SKELETON))
    ends = torch.tensor(SKELETON, device=dev)[order]                  # [..., L, 2] joint ids

    def at(t, idx):   # t [..., K, (C)] gathered at joint ids idx [..., L]
        if t.dim() == idx.dim():
            return t.gather(-1, idx)
        return t.gather(-2, idx[..., None].expand(*idx.shape, t.shape[-1]))

    face = torch.tensor([i in FACE_LIMBS for i in range(len(SKELETON))], device=dev)[order]
    hw = torch.where(face, 0.4 * limb_hw[..., None], limb_hw[..., None])
    starts = torch.cat([at(keypoints, ends[..., 0]), keypoints], -2)
    stops = torch.cat([at(keypoints, ends[..., 1]), keypoints], -2)
    widths = torch.cat([hw, marker_r[..., None].expand(*batch, K)], -1)
    colours = torch.cat([LIMB_COLOURS.to(dev)[order],
                         KEYPOINT_COLOURS.to(dev).expand(*batch, K, 3)], -2)
    on = torch.cat([~(at(hidden, ends[..., 0]) | at(hidden, ends[..., 1])), ~hidden], -1)
    return starts, stops, widths, colours, on.float()


def _distractor_segments(kinds, a, b, limb_hw, marker_r):
    """Distractor limbs — copies of the limbs ``kinds`` [..., D] (SKELETON ids) from ``a``
    to ``b`` [..., D, 2] — as segments: the D limbs, then their D start markers, then their D
    end markers. limb_hw and marker_r (pixels): [..., D] or broadcastable to it. Returns
    starts and stops [..., 3D, 2], half-widths [..., 3D] and colours [..., 3D, 3]."""
    ends = torch.tensor(SKELETON)[kinds.cpu()]                        # [..., D, 2] joint ids
    marker_r = marker_r.expand(kinds.shape)
    widths = torch.cat([limb_hw.expand(kinds.shape), marker_r, marker_r], -1)
    colours = torch.cat([LIMB_COLOURS[kinds.cpu()], KEYPOINT_COLOURS[ends[..., 0]],
                         KEYPOINT_COLOURS[ends[..., 1]]], -2).to(a.device)
    return torch.cat([a, a, b], -2), torch.cat([b, a, b], -2), widths, colours


def _paint(img, masks, colours, alpha=None):
    """Composite masks [n, S, H, W] with colours [n, S, 3] over img [n, 3, H, W], in order."""
    if alpha is not None:
        masks = masks * alpha[:, :, None, None]
    for s in range(masks.shape[1]):
        m = masks[:, s, None]
        img = img.addcmul_(colours[:, s, :, None, None] - img, m)   # img·(1 − m) + c·m
    return img


def _texture(g, n, h, w, lowres=(4, 3)):
    """A smooth random colour field with pixel noise, [n, 3, h, w] (CPU)."""
    base = torch.rand(n, 3, 1, 1, generator=g) * 0.6 + 0.2
    blobs = torch.randn(n, 3, *lowres, generator=g)
    low = F.interpolate(blobs, size=(h, w), mode="bilinear", align_corners=False)
    return base + 0.15 * low + 0.05 * torch.randn(n, 3, h, w, generator=g)


def make_batch(seed: int, index: int, n: int, cfg: DataConfig = DataConfig(),
               device="cpu") -> dict:
    """Sample batch ``index`` of the stream ``seed``: a dict of tensors on ``device``

    images [n, 3, H, W] (normalised), keypoints [n, K, 2] (input pixels), visible [n, K]
    (COCO v: 1 labelled but hidden, 2 visible), box [n, 4] (x, y, w, h), area [n]: the box's
    area, the instance scale of OKS (COCO takes the segment's area, smaller than the box, so
    OKS here is somewhat more lenient than COCO's; the same for every loss).
    Every random number is drawn on the CPU from one generator (the same batch on every
    device); the drawing itself runs on ``device``.
    """
    g = torch.Generator().manual_seed(int(seed) * 7_919_263 + int(index))
    h, w = cfg.height, cfg.width
    kp, hidden = _pose(g, n)
    keypoints, box, px_per_unit = _crop(g, kp, cfg)
    ppu = px_per_unit.mean(-1)                                    # [n]
    background = _texture(g, n, h, w)
    # Distractor limbs: copies of arm/leg segments of other people, at random places, with
    # their joint markers; a random half of them behind the person, the rest in front.
    nd = cfg.max_distractors
    kinds = torch.tensor(ARM_LEG_LIMBS)[torch.randint(len(ARM_LEG_LIMBS), (n, nd), generator=g)]
    d_on = (torch.arange(nd)[None] < torch.randint(0, nd + 1, (n, 1), generator=g)).float()
    d_front = torch.rand(n, nd, generator=g) < 0.5
    d_a = torch.rand(n, nd, 2, generator=g) * torch.tensor([w, h])
    d_dir = _uniform(g, n * nd, 0, 2 * math.pi).view(n, nd)
    d_len = _uniform(g, n * nd, 0.12, 0.24).view(n, nd) * ppu[:, None]
    d_b = d_a + d_len[..., None] * torch.stack([d_dir.cos(), d_dir.sin()], -1)
    limb_hw = 0.022 * ppu * _uniform(g, n, 0.8, 1.2)               # limb half-width, px
    marker_r = (0.02 * ppu).clamp_min(0.9)
    order = torch.randperm(len(SKELETON), generator=g)            # which limb is in front
    occ_on = (torch.rand(n, 2, generator=g)
              < torch.tensor([cfg.occluder_prob, cfg.occluder_prob / 2])).float()
    occ_c = torch.rand(n, 2, 2, generator=g) * torch.tensor([w, h])
    occ_half = torch.stack([_uniform(g, n * 2, 0.1, 0.22).view(n, 2) * w,
                            _uniform(g, n * 2, 0.08, 0.18).view(n, 2) * h], -1)
    occ_tex = _texture(g, n * 2, h, w, lowres=(3, 2)).view(n, 2, 3, h, w)
    noise = _uniform(g, n, 0.01, 0.06)[:, None, None, None] * torch.randn(n, 3, h, w,
                                                                         generator=g)

    # ---- drawing, on the device
    dev = torch.device(device)
    keypoints, hidden, ppu, limb_hw, marker_r = (
        t.to(dev) for t in (keypoints, hidden, ppu, limb_hw, marker_r))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=dev),
                            torch.arange(w, dtype=torch.float32, device=dev), indexing="ij")
    grid = torch.stack([xs, ys], -1)                              # [H, W, 2]
    # a distractor: its segment, then its two joint markers
    d_starts, d_stops, d_widths, d_cols = _distractor_segments(
        kinds, d_a.to(dev), d_b.to(dev), limb_hw[:, None], marker_r[:, None])
    d_masks = _segment_masks(grid, d_starts, d_stops, d_widths)
    behind = (d_on * (~d_front).float()).repeat(1, 3).to(dev)
    front = (d_on * d_front.float()).repeat(1, 3).to(dev)

    # The person: limbs (face links thinner; a limb to a hidden face keypoint is hidden with
    # it), then the markers of the keypoints it shows.
    p_starts, p_stops, p_widths, p_cols, p_on = _person_segments(keypoints, hidden, order,
                                                                 limb_hw, marker_r)
    p_masks = _segment_masks(grid, p_starts, p_stops, p_widths)

    # One stack, back to front: distractors behind, the person, distractors in front.
    img = _paint(background.to(dev), torch.cat([d_masks, p_masks, d_masks], 1),
                 torch.cat([d_cols, p_cols, d_cols], 1), torch.cat([behind, p_on, front], 1))
    cover = (d_masks * front[:, :, None, None]).amax(1)
    # Occluders in front of everything: textured rectangles.
    inside = ((grid[None, None] - occ_c.to(dev)[:, :, None, None]).abs()
              <= occ_half.to(dev)[:, :, None, None]).all(-1).float() \
        * occ_on.to(dev)[:, :, None, None]
    occ_tex = occ_tex.to(dev)
    for o in range(2):
        img = img.addcmul_(occ_tex[:, o] - img, inside[:, o, None])
    cover = torch.maximum(cover, inside.amax(1))
    img = img + noise.to(dev)

    # Visibility: 2 when the keypoint's marker can be seen, 1 when hidden (turned away,
    # under something in front, or outside the frame) but still labelled.
    ix = keypoints[..., 0].round().long()
    iy = keypoints[..., 1].round().long()
    in_frame = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    covered = cover.flatten(1).gather(1, (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1))) > 0.5
    shown = in_frame & ~hidden & ~covered
    visible = torch.where(shown, 2, 1).to(torch.int64)
    return dict(images=((img - 0.5) / 0.25).contiguous(), keypoints=keypoints,
                visible=visible, box=box.to(dev), area=(box[:, 2] * box[:, 3]).to(dev))


def validation_set(n: int, cfg: DataConfig = DataConfig(), chunk: int = 64) -> dict:
    """The fixed validation set: ``n`` samples from VAL_SEED, made in chunks."""
    parts = [make_batch(VAL_SEED, i, min(chunk, n - i * chunk), cfg)
             for i in range(math.ceil(n / chunk))]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


# ----------------------------------------------------------------------------- targets

def heatmap_targets(keypoints, visible, cfg: DataConfig = DataConfig()):
    """mmpose ``MSRAHeatmap`` targets: ``(heatmaps [n, K, h, w], weights [n, K])``.

    Keypoints go to heatmap pixels by the stride and are rounded (``int(x + 0.5)``, as
    mmpose); the unit-peak Gaussian is cut to its (6σ+1)² window; the weight is 0 when the
    keypoint is unlabelled or its window misses the heatmap entirely.
    """
    wh, hh = cfg.heatmap_size
    sigma = cfg.heatmap_sigma
    radius = 3 * sigma
    mu = torch.floor(keypoints / cfg.heatmap_stride + 0.5)        # [n, K, 2]
    weight = (visible > 0) & (mu[..., 0] - radius < wh) & (mu[..., 1] - radius < hh) \
        & (mu[..., 0] + radius + 1 >= 0) & (mu[..., 1] + radius + 1 >= 0)
    xs = torch.arange(wh, dtype=torch.float32, device=keypoints.device)
    ys = torch.arange(hh, dtype=torch.float32, device=keypoints.device)
    dx = xs.view(1, 1, 1, wh) - mu[..., 0, None, None]
    dy = ys.view(1, 1, hh, 1) - mu[..., 1, None, None]
    window = (dx.abs() <= radius) & (dy.abs() <= radius) & weight[..., None, None]
    gauss = torch.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))
    return torch.where(window, gauss, torch.zeros_like(gauss)), weight.float()


def simcc_targets(keypoints, visible, cfg: DataConfig = DataConfig()):
    """mmpose ``SimCCLabel`` (gaussian, normalised) targets: ``((x [n, K, Wx], y [n, K, Hy]),
    weights [n, K])``; positions are rounded to bins, labels divided by σ√(2π)."""
    bins_x, bins_y = cfg.simcc_bins
    sigma = cfg.simcc_sigma
    radius = 3 * sigma
    mu = torch.round(keypoints * cfg.simcc_split_ratio)
    weight = (visible > 0) & (mu[..., 0] - radius < bins_x) & (mu[..., 1] - radius < bins_y) \
        & (mu[..., 0] + radius + 1 >= 0) & (mu[..., 1] + radius + 1 >= 0)
    labels = []
    for axis, bins in ((0, bins_x), (1, bins_y)):
        pos = torch.arange(bins, dtype=torch.float32, device=keypoints.device).view(1, 1, bins)
        t = torch.exp(-(pos - mu[..., axis, None]) ** 2 / (2 * sigma ** 2))
        labels.append(t * weight[..., None] / (sigma * math.sqrt(2 * math.pi)))
    return tuple(labels), weight.float()
