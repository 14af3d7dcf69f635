"""Scenes of several people with detector-like candidate boxes: the input of the top-down
protocol with detected boxes (bench/train_protocols.py).

Why: bench/train.py scores a model on ground-truth crops, one person per crop, where the
instance score only orders people against each other. The RSPose paper credits its AP gain
to keypoint confidence that tracks localisation quality, which pays when a detector gives
several candidate boxes per person (and some on no person) that must be rescored and
suppressed: mmpose's top-down evaluation with detector results. This module makes that input.

A scene (``scene_size(cfg)``: 128 × 128 px for 48 × 64 crops) holds 1–3 people drawn as
bench/train_data.py draws one (its poses, limb widths, colours, joint markers and
self-occlusion; a person's padded box is about one training crop, 0.8–1.2×), the second
placed overlapping the first in 70 % of scenes (as far as the scene allows), in a random
depth order; distractor limbs (behind or in front of everyone), textured occluders (in
front, over the people) and a textured background. A scene is a *vector description* —
poses, widths, colours, texture lattices — and each crop is drawn from it at the crop's own
pixel grid (not resampled from a scene image), so overlapping crops see the same scene: the
smooth colour fields are functions of scene coordinates, the pixel grain and the sensor noise
are lattices over scene pixels (read at the nearest scene pixel; beyond their margin they
repeat the border).

Candidates, per person: 2–4 boxes jittered in shift and scale (each side on its own) around
the person's box, the first lightly, with a box score that falls with the jitter (its IoU
with the person's box, plus noise); false positives on background and on distractor limbs
with lower scores. A box becomes a crop as mmpose's top-down pipeline makes one:
``GetBBoxCenterScale`` (padding 1.25), then ``TopdownAffine`` (the aspect fixed to the
input's 3:4 by growing the short side; no rotation at test time). Crop pixels follow
train_data's convention, which the models were trained in: pixel centres at integers, the
crop spanning [−0.5, W − 0.5], its centre at (W − 1)/2 (mmpose's warp puts it at W/2 and
inverts with the same rule, so the protocol is the same). Where a crop reaches past the
scene's edge the scene goes on (mmpose's warp pads with black, which no training crop shows).

Ground truth (COCO, one image per scene): per person its keypoints in scene pixels, visibility
2 (drawn and not covered by an occluder, a distractor in front or a person in front) or 1
(turned away or covered, still labelled, as train_data labels it), its box (the keypoints'
extent, 5 % margin) and area (train_data's: the box fixed to 3:4, so OKS has the same scale
as under the ground-truth-box protocol).

Everything is a pure function of ``(seed, n)``; the validation scenes come from SCENE_SEED,
which no training run and not train_data.VAL_SEED uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from bench.train_data import (
    ARM_LEG_LIMBS,
    SKELETON,
    DataConfig,
    K,
    _distractor_segments,
    _paint,
    _person_segments,
    _pose,
    _segment_masks,
    _uniform,
)

SCENE_SEED = 2_000_029
MAX_PEOPLE = 3
CANDIDATES = (2, 4)           # boxes per person, inclusive range
MAX_DISTRACTORS = 8           # per scene (train_data: up to 3 per crop, a scene is ~5 crops)
BACKGROUND_FPS = 2            # false-positive slots on background, each on with p 0.35
DISTRACTOR_FP_PROB = 0.15     # a false positive on a distractor limb
OVERLAP_PROB = 0.7            # the second person overlaps the first
PADDING = 1.25                # mmpose GetBBoxCenterScale
MARKER_MIN = 0.9              # train_data: joint markers at least this radius, crop px
GRAIN = 0.05                  # train_data._texture's pixel grain
L = len(SKELETON)


def scene_size(cfg: DataConfig = DataConfig()):
    """(width, height) of a scene in pixels: 128 × 128 for 48 × 64 crops."""
    return round(cfg.width * 8 / 3), 2 * cfg.height


def _unit(cfg):
    return cfg.height / 64          # lengths below are for 48 × 64 crops


# ----------------------------------------------------------------------------- geometry

def box_to_centre_scale(box, cfg: DataConfig = DataConfig(), padding: float = PADDING):
    """mmpose's top-down crop of boxes ``(x, y, w, h)`` [..., 4]: ``bbox_xywh2cs`` with
    ``padding``, then TopdownAffine's ``_fix_aspect_ratio`` (grow the short side to the
    input's aspect). Returns centres [..., 2] and scales [..., 2] (the crop's extent in scene
    pixels, mmpose's ``bbox_scale``)."""
    centre = box[..., :2] + box[..., 2:] / 2
    w, h = box[..., 2] * padding, box[..., 3] * padding
    aspect = cfg.width / cfg.height
    wide = w > h * aspect
    w, h = torch.where(wide, w, h * aspect), torch.where(wide, w / aspect, h)
    return centre, torch.stack([w, h], -1)


def _frame(cfg, like):
    return torch.tensor([cfg.width, cfg.height], dtype=like.dtype, device=like.device)


def to_crop(points, centre, scale, cfg: DataConfig = DataConfig()):
    """Scene pixels [N, ..., 2] -> crop pixels of the crops ``centre``, ``scale`` [N, 2]."""
    frame = _frame(cfg, points)
    shape = (points.shape[0],) + (1,) * (points.dim() - 2) + (2,)
    return ((points - centre.to(points).view(shape)) / scale.to(points).view(shape) * frame
            + (frame - 1) / 2)


def to_scene(points, centre, scale, cfg: DataConfig = DataConfig()):
    """Crop pixels [N, ..., 2] -> scene pixels (the inverse of ``to_crop``)."""
    frame = _frame(cfg, points)
    shape = (points.shape[0],) + (1,) * (points.dim() - 2) + (2,)
    return ((points - (frame - 1) / 2) / frame * scale.to(points).view(shape)
            + centre.to(points).view(shape))


def box_iou(a, b):
    """IoU of boxes (x, y, w, h) [..., 4], elementwise."""
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)
    return inter / (a[..., 2:].prod(-1) + b[..., 2:].prod(-1) - inter)


# ----------------------------------------------------------------------------- scenes

@dataclass
class Scenes:
    """A batch of scenes and their candidate crops (all tensors on the CPU).

    people [S, P] (slots in depth order, slot 0 at the back; unused slots off): on, keypoints
    [S, P, K, 2] (scene px), visible [S, P, K] (2, 1; 0 in unused slots), box [S, P, 4]
    (x, y, w, h), area. segments [S, T]: the scene in paint order — distractors behind,
    each person's limbs then markers, distractors in front: start, stop [.., 2], width (half,
    px), colour [.., 3], alpha, marker (a joint marker: its radius has a floor in crop px),
    owner (person slot; −1 behind everyone, P in front of everyone). occluders [S, O]: on,
    centre, half (half-extent), base colour, blobs (a 3 × 2 lattice of smooth colour), origin
    and cell of that lattice. background [S]: base, blobs, origin, cell, noise (sensor noise
    amplitude), texture_seed (the grain and noise lattices). candidates [N]: scene, person
    (slot; −1 for a false positive), kind (0 person, 1 background, 2 distractor), box
    (detector box, x, y, w, h), box_score, centre and scale (the crop), images [N, 3, H, W]
    (normalised as train_data's).
    """
    cfg: DataConfig
    size: tuple
    margin: int                  # scene px of grain lattice beyond each side of the scene
    people: dict
    segments: dict
    occluders: dict
    background: dict
    candidates: dict = field(default_factory=dict)

    def __len__(self):
        return self.people["on"].shape[0]


def _place(g, n, half, size):
    """Uniform centres [n, 2] that keep a box of half-extent ``half`` [n, 2] in the scene."""
    return half + torch.rand(n, 2, generator=g) * (size - 2 * half).clamp_min(0)


def make_scenes(n: int, cfg: DataConfig = DataConfig(), seed: int = SCENE_SEED,
                render: bool = True) -> Scenes:
    """``n`` scenes from ``seed``, with their candidate boxes (and their crops' images when
    ``render``)."""
    g = torch.Generator().manual_seed(int(seed) * 7_919_263 + 17)
    unit = _unit(cfg)
    W, H = scene_size(cfg)
    size = torch.tensor([W, H], dtype=torch.float32)
    S, P, D = n, MAX_PEOPLE, MAX_DISTRACTORS
    aspect = cfg.width / cfg.height

    # ---- people, as train_data poses them; sized so the padded box is about one crop
    count = torch.randint(1, P + 1, (S,), generator=g)
    person_on = torch.arange(P)[None] < count[:, None]
    kp, hidden = _pose(g, S * P)
    kp, hidden = kp.view(S, P, K, 2), hidden.view(S, P, K)
    lo, hi = kp.min(-2).values, kp.max(-2).values
    extent = hi - lo
    fixed_h = torch.maximum(extent[..., 0] / aspect, extent[..., 1]) * 1.05   # body units
    zoom = _uniform(g, S * P, 0.8, 1.2).view(S, P)
    ppu = cfg.height * zoom / (PADDING * fixed_h)                # scene px per body unit
    half = torch.stack([fixed_h * aspect, fixed_h], -1) * ppu[..., None] / 2
    centre = torch.empty(S, P, 2)
    for p in range(P):
        centre[:, p] = _place(g, S, half[:, p], size)
    # the second person beside the first, overlapping it by a random part of its width
    side = torch.where(torch.rand(S, generator=g) < 0.5, -1.0, 1.0)
    beside = centre[:, 0] + torch.stack([side * _uniform(g, S, 0.35, 0.8) * 2 * half[:, 0, 0],
                                         _uniform(g, S, -0.15, 0.15) * 2 * half[:, 0, 1]], -1)
    beside = torch.minimum(torch.maximum(beside, half[:, 1]), size - half[:, 1])
    overlap = torch.rand(S, generator=g) < OVERLAP_PROB
    centre[:, 1] = torch.where(overlap[:, None], beside, centre[:, 1])
    keypoints = (kp - ((lo + hi) / 2)[..., None, :]) * ppu[..., None, None] + centre[..., None, :]
    limb_hw = 0.022 * ppu * _uniform(g, S * P, 0.8, 1.2).view(S, P)
    marker_r = 0.02 * ppu
    limb_order = torch.rand(S, P, L, generator=g).argsort(-1)
    # depth: a random order of the slots, back to front
    depth = torch.rand(S, P, generator=g).argsort(-1)

    def by_depth(t):
        idx = depth.view(S, P, *([1] * (t.dim() - 2))).expand(S, P, *t.shape[2:])
        return t.gather(1, idx)

    person_on, keypoints, hidden, half, centre, limb_hw, marker_r, limb_order, ppu = (
        by_depth(t) for t in (person_on, keypoints, hidden, half, centre, limb_hw, marker_r,
                              limb_order, ppu))
    tight = torch.cat([keypoints.min(-2).values, keypoints.max(-2).values], -1)
    tight_wh = (tight[..., 2:] - tight[..., :2]) * 1.05
    box = torch.cat([(tight[..., :2] + tight[..., 2:]) / 2 - tight_wh / 2, tight_wh], -1)
    area = (2 * half).prod(-1)                                   # train_data's OKS scale
    crop_like = 2 * half * PADDING                               # the person's padded box

    # ---- distractor limbs, at the scale of the scene's people
    ref_ppu = (ppu * person_on).sum(1) / person_on.sum(1)
    d_on = torch.arange(D)[None] < torch.randint(0, D + 1, (S, 1), generator=g)
    d_kind = torch.tensor(ARM_LEG_LIMBS)[torch.randint(len(ARM_LEG_LIMBS), (S, D), generator=g)]
    d_front = torch.rand(S, D, generator=g) < 0.5
    d_a = torch.rand(S, D, 2, generator=g) * size
    d_dir = _uniform(g, S * D, 0, 2 * math.pi).view(S, D)
    d_len = _uniform(g, S * D, 0.12, 0.24).view(S, D) * ref_ppu[:, None]
    d_b = d_a + d_len[..., None] * torch.stack([d_dir.cos(), d_dir.sin()], -1)
    d_hw = 0.022 * ref_ppu[:, None] * _uniform(g, S * D, 0.8, 1.2).view(S, D)
    d_marker = (0.02 * ref_ppu[:, None]).expand(S, D)

    # ---- occluders: per person, as train_data per crop (p 0.5, a second with p 0.25),
    # sized by the person's padded box and placed in it
    n_occ = 2 * P
    occ_on = (torch.rand(S, P, 2, generator=g) < torch.tensor([0.5, 0.25])) & person_on[..., None]
    region = crop_like[:, :, None].expand(S, P, 2, 2)
    occ_centre = centre[:, :, None] + (torch.rand(S, P, 2, 2, generator=g) - 0.5) * region
    occ_half = torch.stack([_uniform(g, S * n_occ, 0.1, 0.22).view(S, P, 2),
                            _uniform(g, S * n_occ, 0.08, 0.18).view(S, P, 2)], -1) * region
    occ_base = torch.rand(S, n_occ, 3, generator=g) * 0.6 + 0.2
    occ_blobs = torch.randn(S, n_occ, 3, 3, 2, generator=g)          # rows × cols, as lowres (3, 2)
    occ_origin = (centre[:, :, None] - region / 2).reshape(S, n_occ, 2)
    occ_cell = (region / torch.tensor([2.0, 3.0])).reshape(S, n_occ, 2)

    # ---- background: smooth field of 16 px cells (train_data: a 4 × 3 lattice over 64 × 48)
    margin = round(48 * unit)
    cell = 16 * unit
    gw, gh = math.ceil((W + 2 * margin) / cell), math.ceil((H + 2 * margin) / cell)
    background = dict(base=torch.rand(S, 3, generator=g) * 0.6 + 0.2,
                      blobs=torch.randn(S, 3, gh, gw, generator=g),
                      origin=torch.full((S, 2), -float(margin)),
                      cell=torch.full((S, 2), float(cell)),
                      noise=_uniform(g, S, 0.01, 0.06),
                      texture_seed=torch.randint(0, 2 ** 62, (S,), generator=g))

    # ---- the scene in paint order
    p_start, p_stop, p_width, p_colour, p_on = _person_segments(keypoints, hidden, limb_order,
                                                                limb_hw, marker_r)
    d_start, d_stop, d_width, d_colour = _distractor_segments(d_kind, d_a, d_b, d_hw, d_marker)
    seg_p = L + K
    d_alpha = d_on.float().repeat(1, 3)
    d_fr = d_front.repeat(1, 3)
    d_is_marker = torch.arange(3 * D) >= D
    p_is_marker = (torch.arange(seg_p) >= L)[None, None].expand(S, P, seg_p)
    owner_p = torch.arange(P)[None, :, None].expand(S, P, seg_p)
    segments = dict(
        start=torch.cat([d_start, p_start.reshape(S, -1, 2), d_start], 1),
        stop=torch.cat([d_stop, p_stop.reshape(S, -1, 2), d_stop], 1),
        width=torch.cat([d_width, p_width.reshape(S, -1), d_width], 1),
        colour=torch.cat([d_colour, p_colour.reshape(S, -1, 3), d_colour], 1),
        alpha=torch.cat([d_alpha * ~d_fr, (p_on * person_on[..., None]).reshape(S, -1),
                         d_alpha * d_fr], 1),
        marker=torch.cat([d_is_marker.expand(S, -1), p_is_marker.reshape(S, -1),
                          d_is_marker.expand(S, -1)], 1),
        owner=torch.cat([torch.full((S, 3 * D), -1), owner_p.reshape(S, -1),
                         torch.full((S, 3 * D), P)], 1))
    occluders = dict(on=occ_on.reshape(S, n_occ), centre=occ_centre.reshape(S, n_occ, 2),
                     half=occ_half.reshape(S, n_occ, 2), base=occ_base, blobs=occ_blobs,
                     origin=occ_origin, cell=occ_cell)

    visible = _scene_visibility(keypoints, hidden, person_on, segments, occluders, size)
    people = dict(on=person_on, keypoints=keypoints, hidden=hidden, visible=visible, box=box,
                  area=area)
    scenes = Scenes(cfg, (W, H), margin, people, segments, occluders, background)
    scenes.candidates = _candidates(g, scenes, d_on, d_a, d_b, ref_ppu, size)
    if render:
        c = scenes.candidates
        c["images"] = render_crops(scenes, c["scene"], c["centre"], c["scale"])
    return scenes


def _scene_visibility(keypoints, hidden, person_on, segments, occluders, size):
    """COCO visibility [S, P, K]: 2 when the keypoint's marker is drawn and nothing in front
    of its person (a person later in depth order, a distractor in front, an occluder) covers
    its position, 1 otherwise; 0 in unused slots."""
    S, P = person_on.shape
    pts = keypoints.reshape(S, P * K, 2)
    # point queries: the segments' masks at the keypoints, [S, T, P·K]
    width = torch.where(segments["marker"], segments["width"].clamp_min(MARKER_MIN),
                        segments["width"])
    masks = _segment_masks(pts[:, None, None], segments["start"], segments["stop"], width)[:, :, 0]
    owner_of_point = torch.arange(P).repeat_interleave(K)
    in_front = segments["owner"][:, :, None] > owner_of_point[None, None]
    covered = ((masks > 0.5) & (segments["alpha"][:, :, None] > 0) & in_front).any(1)
    inside = ((pts[:, None] - occluders["centre"][:, :, None]).abs()
              <= occluders["half"][:, :, None]).all(-1) & occluders["on"][:, :, None]
    covered = (covered | inside.any(1)).view(S, P, K)
    r = keypoints.round()
    in_scene = ((r >= 0) & (r <= size - 1)).all(-1)
    shown = ~hidden & ~covered & in_scene
    return torch.where(person_on[..., None], torch.where(shown, 2, 1), 0).to(torch.int64)


def _candidates(g, scenes, d_on, d_a, d_b, ref_ppu, size):
    """Detector-like boxes, scores and crops: per person CANDIDATES boxes jittered around its
    box (the first lightly), score = IoU with the person's box + noise; false positives on
    background and on distractor limbs, scored lower."""
    cfg, people = scenes.cfg, scenes.people
    on, box = people["on"], people["box"]
    S, P = on.shape
    C = CANDIDATES[1]
    n_cand = torch.randint(CANDIDATES[0], C + 1, (S, P), generator=g)
    c_on = on[..., None] & (torch.arange(C) < n_cand[..., None])
    jitter = torch.rand(S, P, C, generator=g) * torch.tensor([0.3] + [1.0] * (C - 1))
    wh = box[..., None, 2:].expand(S, P, C, 2)
    centre = box[..., None, :2] + wh / 2
    shift = 0.2 * jitter[..., None] * torch.randn(S, P, C, 2, generator=g) * wh
    grow = torch.exp(0.3 * jitter[..., None] * torch.randn(S, P, C, 2, generator=g))
    det_wh = wh * grow
    det = torch.cat([centre + shift - det_wh / 2, det_wh], -1)
    iou = box_iou(det, box[..., None, :].expand(S, P, C, 4))
    score = (iou + 0.08 * torch.randn(S, P, C, generator=g)).clamp(0.02, 1.0)

    # false positives: person-sized boxes anywhere, and boxes around distractor limbs
    unit = _unit(cfg)
    bg_on = torch.rand(S, BACKGROUND_FPS, generator=g) < 0.35
    bg_h = _uniform(g, S * BACKGROUND_FPS, 30, 55).view(S, -1) * unit
    bg_wh = torch.stack([bg_h * _uniform(g, S * BACKGROUND_FPS, 0.45, 0.9).view(S, -1), bg_h],
                        -1)
    bg_c = torch.stack([_place(g, S, bg_wh[:, k] / 2, size)
                        for k in range(BACKGROUND_FPS)], 1)
    bg_box = torch.cat([bg_c - bg_wh / 2, bg_wh], -1)
    bg_score = _uniform(g, S * BACKGROUND_FPS, 0.02, 0.3).view(S, -1)
    D = d_on.shape[1]
    dfp_on = d_on & (torch.rand(S, D, generator=g) < DISTRACTOR_FP_PROB)
    dfp_h = _uniform(g, S * D, 0.5, 0.9).view(S, D) * ref_ppu[:, None]
    dfp_wh = torch.stack([dfp_h * _uniform(g, S * D, 0.45, 0.9).view(S, D), dfp_h], -1)
    dfp_box = torch.cat([(d_a + d_b) / 2 - dfp_wh / 2, dfp_wh], -1)
    dfp_score = _uniform(g, S * D, 0.02, 0.4).view(S, D)

    slots_on = torch.cat([c_on.reshape(S, -1), bg_on, dfp_on], 1)
    boxes = torch.cat([det.reshape(S, -1, 4), bg_box, dfp_box], 1)
    scores = torch.cat([score.reshape(S, -1), bg_score, dfp_score], 1)
    person = torch.cat([torch.arange(P).repeat_interleave(C).expand(S, -1),
                        torch.full((S, BACKGROUND_FPS + D), -1)], 1)
    kind = torch.cat([torch.zeros(S, P * C, dtype=torch.long),
                      torch.ones(S, BACKGROUND_FPS, dtype=torch.long),
                      torch.full((S, D), 2, dtype=torch.long)], 1)
    s_idx, slot = slots_on.nonzero(as_tuple=True)                # scene-major order
    crop_centre, crop_scale = box_to_centre_scale(boxes[s_idx, slot], cfg)
    return dict(scene=s_idx, person=person[s_idx, slot], kind=kind[s_idx, slot],
                box=boxes[s_idx, slot], box_score=scores[s_idx, slot], centre=crop_centre,
                scale=crop_scale)


def crop_targets(scenes: Scenes, scene, person, centre, scale):
    """Keypoints [N, K, 2] in crop pixels and visibility [N, K] of person slot ``person`` of
    scene ``scene`` in the crops ``centre``, ``scale``, by train_data's rule: 2 when visible
    in the scene and its rounded position is in the crop, else 1."""
    cfg = scenes.cfg
    kp = to_crop(scenes.people["keypoints"][scene, person], centre, scale, cfg)
    r = kp.round()
    in_frame = (r >= 0).all(-1) & (r[..., 0] < cfg.width) & (r[..., 1] < cfg.height)
    shown = (scenes.people["visible"][scene, person] == 2) & in_frame
    return kp, torch.where(shown, 2, 1).to(torch.int64)


# ----------------------------------------------------------------------------- rendering

def _bilinear(lattice, pts, origin, cell):
    """A smooth field: ``lattice`` [n, C, gh, gw] values at cell centres ``origin + (j + ½)
    cell`` [n, 2], bilinear between them and constant beyond the outer centres (as
    F.interpolate(align_corners=False), which train_data._texture uses), at ``pts``
    [n, ..., 2] -> [n, C, ...]."""
    n, c, gh, gw = lattice.shape
    shape = pts.shape[1:-1]
    pts = pts.reshape(n, -1, 2)
    u = (pts - origin[:, None]) / cell[:, None] - 0.5
    ux, uy = u[..., 0].clamp(0, gw - 1), u[..., 1].clamp(0, gh - 1)
    x0, y0 = ux.floor().long(), uy.floor().long()
    x1, y1 = (x0 + 1).clamp(max=gw - 1), (y0 + 1).clamp(max=gh - 1)
    fx, fy = (ux - x0)[:, None], (uy - y0)[:, None]
    flat = lattice.reshape(n, c, gh * gw)

    def at(yy, xx):
        return flat.gather(2, (yy * gw + xx)[:, None].expand(n, c, -1))

    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return (top * (1 - fy) + bottom * fy).view(n, c, *shape)


def _lattices(scenes: Scenes, which):
    """The per-pixel lattices of scenes ``which``: [u, 3 (background grain, occluder grain,
    sensor noise), 3, H + 2·margin, W + 2·margin], each scene's from its own seed."""
    W, H = scenes.size
    m = scenes.margin
    seeds = scenes.background["texture_seed"][which].tolist()
    return torch.stack([torch.randn(3, 3, H + 2 * m, W + 2 * m,
                                    generator=torch.Generator().manual_seed(s)) for s in seeds])


def _nearest(lattice_flat, local, pts, size, margin):
    """Lattice values at the nearest scene pixel of ``pts`` [n, H, W, 2]: ``lattice_flat``
    [3, u·Hl·Wl], ``local`` [n] (which scene's lattice) -> [n, 3, H, W]."""
    W, H = size
    wl, hl = W + 2 * margin, H + 2 * margin
    ix = (pts[..., 0].round().long() + margin).clamp(0, wl - 1)
    iy = (pts[..., 1].round().long() + margin).clamp(0, hl - 1)
    idx = local.view(-1, 1, 1) * (hl * wl) + iy * wl + ix
    return lattice_flat[:, idx].transpose(0, 1)


def _compact(relevant, cap=None):
    """Per row, the indices of its relevant entries first, in order: (index [n, m], valid
    [n, m]) with m the most any row has. Dropping what cannot show is exact (its mask is 0)."""
    order = (~relevant).to(torch.uint8).argsort(dim=-1, stable=True)
    m = max(int(relevant.sum(-1).max()), 1) if cap is None else cap
    idx = order[:, :m]
    return idx, relevant.gather(1, idx)


def render_crops(scenes: Scenes, scene, centre, scale, chunk: int = 48,
                 scenes_per_group: int = 16):
    """Draw crops of ``scene`` [N] at ``centre``, ``scale`` [N, 2] (scene px) at the
    input's pixel grid: images [N, 3, H, W], normalised as train_data's."""
    cfg = scenes.cfg
    h, w = cfg.height, cfg.width
    n_all = scene.shape[0]
    out = torch.empty(n_all, 3, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    grid = torch.stack([xs, ys], -1)                              # [H, W, 2] crop px
    seg, occ, bg = scenes.segments, scenes.occluders, scenes.background
    frame = torch.tensor([w, h], dtype=torch.float32)
    groups = torch.unique(scene)
    for gi in range(0, len(groups), scenes_per_group):
        members = groups[gi:gi + scenes_per_group]
        lattice = _lattices(scenes, members)                      # [u, 3, 3, Hl, Wl]
        lat = [lattice[:, j].transpose(0, 1).reshape(3, -1) for j in range(3)]
        local_of = torch.full((len(scenes),), -1, dtype=torch.long)
        local_of[members] = torch.arange(len(members))
        crops = torch.isin(scene, members).nonzero(as_tuple=True)[0]
        s = scene[crops]
        px = frame / scale[crops]                                 # crop px per scene px
        c = centre[crops]
        # each crop's segments in crop pixels, and which of them can show in it
        a = (seg["start"][s] - c[:, None]) * px[:, None] + (frame - 1) / 2
        b = (seg["stop"][s] - c[:, None]) * px[:, None] + (frame - 1) / 2
        width = seg["width"][s] * px[:, :1]
        width = torch.where(seg["marker"][s], width.clamp_min(MARKER_MIN), width)
        reach = width + 0.5
        lo, hi = torch.minimum(a, b) - reach[..., None], torch.maximum(a, b) + reach[..., None]
        relevant = (seg["alpha"][s] > 0) & (hi[..., 0] >= 0) & (hi[..., 1] >= 0) \
            & (lo[..., 0] <= w - 1) & (lo[..., 1] <= h - 1)
        # chunks of crops with similar segment counts, so padding is small
        by_count = relevant.sum(1).argsort()
        for i in range(0, len(crops), chunk):
            sel = by_count[i:i + chunk]
            n = len(sel)
            idx, valid = _compact(relevant[sel])
            take = lambda t: t[sel].gather(  # noqa: E731
                1, idx.view(n, -1, *([1] * (t.dim() - 2))).expand(n, idx.shape[1], *t.shape[2:]))
            pts = (grid[None] - (frame - 1) / 2) / px[sel, None, None] + c[sel, None, None]
            ss = s[sel]
            local = local_of[ss]
            img = bg["base"][ss, :, None, None] \
                + 0.15 * _bilinear(bg["blobs"][ss], pts, bg["origin"][ss], bg["cell"][ss]) \
                + GRAIN * _nearest(lat[0], local, pts, scenes.size, scenes.margin)
            masks = _segment_masks(grid, take(a), take(b), take(width))
            img = _paint(img, masks, take(seg["colour"][s]), take(seg["alpha"][s]) * valid)
            # occluders, in front of everything: textured rectangles
            on = occ["on"][ss][:, :, None, None]
            inside = ((pts[:, None] - occ["centre"][ss][:, :, None, None]).abs()
                      <= occ["half"][ss][:, :, None, None]).all(-1) & on
            shows = inside.flatten(2).any(-1)
            if shows.any():
                oi, ov = _compact(shows)
                o = oi.shape[1]
                pick = lambda t: t[ss].gather(  # noqa: E731
                    1, oi.view(n, o, *([1] * (t.dim() - 2))).expand(n, o, *t.shape[2:]))
                blobs = pick(occ["blobs"])
                smooth = _bilinear(blobs.reshape(n * o, 3, 3, 2),
                                   pts[:, None].expand(n, o, h, w, 2).reshape(n * o, h, w, 2),
                                   pick(occ["origin"]).reshape(n * o, 2),
                                   pick(occ["cell"]).reshape(n * o, 2)).view(n, o, 3, h, w)
                grain = GRAIN * _nearest(lat[1], local, pts, scenes.size, scenes.margin)
                tex = pick(occ["base"])[..., None, None] + 0.15 * smooth + grain[:, None]
                cover = inside.gather(1, oi[..., None, None].expand(n, o, h, w)) \
                    & ov[..., None, None]
                for j in range(o):
                    img = img.addcmul_(tex[:, j] - img, cover[:, j, None].float())
            img = img + bg["noise"][ss, None, None, None] \
                * _nearest(lat[2], local, pts, scenes.size, scenes.margin)
            out[crops[sel]] = (img - 0.5) / 0.25
    return out


def scene_ground_truth(scenes: Scenes) -> dict:
    """The scenes' COCO keypoint ground truth: image ``i + 1`` is scene ``i``, one
    annotation per person."""
    W, H = scenes.size
    p = scenes.people
    images, anns = [], []
    for i in range(len(scenes)):
        images.append({"id": i + 1, "width": W, "height": H})
        for q in p["on"][i].nonzero(as_tuple=True)[0].tolist():
            vis = p["visible"][i, q]
            flat = torch.cat([p["keypoints"][i, q].double(), vis[:, None].double()], 1)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                         "iscrowd": 0, "keypoints": flat.reshape(-1).tolist(),
                         "num_keypoints": int((vis > 0).sum()),
                         "bbox": p["box"][i, q].double().tolist(), "area": float(p["area"][i, q]),
                         "person": q})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
