"""Decoding and scoring for bench/train.py: mmpose-style decoders, the real COCO keypoint
evaluator (pycocotools), PCK and the confidence–quality correlations.

Decoders follow mmpose's codecs, with one deliberate difference: mmpose marks a keypoint
whose maximum is ≤ 0 as missing (location −1). That rule assumes MSE heatmaps in [0, 1];
ranking losses train logits, whose maxima may be negative, so here every keypoint keeps its
arg-max and its raw maximum as confidence.

- heatmap (``MSRAHeatmap``): arg-max, then the quarter-pixel shift towards the higher
  neighbour (``refine_keypoints``), times the stride; confidence = the maximum;
- SimCC (``SimCCLabel``): arg-max bin of x and of y divided by the split ratio; confidence =
  min(max x, max y) (``get_simcc_maximum``).

Instance score = mean keypoint confidence: mmpose's top-down rescoring (``CocoMetric``,
``score_mode='bbox_keypoint'``: box score × mean of the keypoint scores above
``keypoint_score_thr``) with ground-truth boxes (score 1) and no threshold, since the losses
put confidence on different scales and one threshold would not be fair to all. One instance
per image, so no OKS-NMS.
"""
from __future__ import annotations

import contextlib
import io
import math
import statistics

import numpy as np
import torch
from scipy.stats import spearmanr

import rspose_kernels as rk

COCO_SIGMAS = np.array(rk.COCO_SIGMAS)
PCK_THR = 0.05


def decode_heatmaps(heatmaps: torch.Tensor, stride: int):
    """``[B, K, h, w]`` -> keypoints ``[B, K, 2]`` in input pixels, confidence ``[B, K]``."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.flatten(2)
    conf, idx = flat.max(-1)
    x, y = idx % w, torch.div(idx, w, rounding_mode="floor")

    def at(xx, yy):
        return flat.gather(-1, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(-1))[..., 0]

    # mmpose refine_keypoints: the conditions are its own (1 < x < W-1, 1 < y < H-1)
    dx = torch.where((x > 1) & (x < w - 1), at(x + 1, y) - at(x - 1, y), torch.zeros_like(conf))
    dy = torch.where((y > 1) & (y < h - 1), at(x, y + 1) - at(x, y - 1), torch.zeros_like(conf))
    xy = torch.stack([x + 0.25 * torch.sign(dx), y + 0.25 * torch.sign(dy)], -1).float()
    return xy * stride, conf


def decode_simcc(pred, split_ratio: float):
    """``(x [B, K, Wx], y [B, K, Hy])`` -> keypoints ``[B, K, 2]``, confidence ``[B, K]``."""
    mx, ix = pred[0].max(-1)
    my, iy = pred[1].max(-1)
    xy = torch.stack([ix, iy], -1).float() / split_ratio
    return xy, torch.minimum(mx, my)


# "mmpose": the stock codecs' rule above (arg-max, quarter-pixel shift; raw maximum);
# "dark": rk.decode for logit heads (DARK on exp(logit − max), softplus confidence) — what the
# ranking losses' heads (and a KL SimCC head, whose logits feed a softmax) output;
# "dark-prob": rk.decode(logits=False), mmpose's DARK on the heatmap itself — for MSE heads.
DECODERS = ("mmpose", "dark", "dark-prob")
# the confidence map of a logit head's decoder, compared once (README, "Decoding")
SCORE_DECODERS = ("dark-sigmoid", "dark-softplus", "dark-max")


def decode(output, mode: str, cfg, decoder: str = "mmpose"):
    """Keypoints [B, K, 2] (input pixels) and confidence [B, K] from a head's output."""
    if decoder not in DECODERS + SCORE_DECODERS:
        raise ValueError(f"decoder: expected one of {DECODERS + SCORE_DECODERS}, "
                         f"got {decoder!r}")
    if decoder == "mmpose":
        if mode == "heatmap":
            return decode_heatmaps(output, cfg.heatmap_stride)
        return decode_simcc(output, cfg.simcc_split_ratio)
    logits = decoder != "dark-prob"
    opts = dict(logits=logits)
    if decoder in SCORE_DECODERS:
        opts["score"] = decoder.split("-")[1]
    if mode == "heatmap":
        xy, conf = rk.decode.decode_heatmaps(output, sigma=cfg.heatmap_sigma, **opts)
        return xy * cfg.heatmap_stride, conf
    xy, conf = rk.decode.decode_simcc(*output, sigma=cfg.simcc_sigma, **opts)
    return xy / cfg.simcc_split_ratio, conf


def best_decoder(loss: str) -> str:
    """The decoder made for a loss's head: DARK on probabilities for MSE, on logits else."""
    return "dark-prob" if loss == "mse" else "dark"


def as_number(v) -> float:
    """A CSV cell as a float (nan when blank or not a number)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def mean_sd(values, digits: int = 3) -> str:
    """'mean ± sd' of the non-NaN values (the mean alone for one, 'n/a' for none)."""
    values = [v for v in map(as_number, values) if not math.isnan(v)]
    if not values:
        return "n/a"
    m = statistics.fmean(values)
    if len(values) < 2:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def coco_eval(coco_gt, dets: list):
    """pycocotools COCOeval (keypoints, COCO's sigmas) of detections ``dets``, quietly; the
    evaluated ``COCOeval`` (``.stats``, ``.ious``)."""
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = COCO_SIGMAS
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _coco(gt: dict):
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_ground_truth(keypoints, visible, box, area) -> dict:
    """A COCO keypoint ground-truth dict, one image and one person per sample."""
    kp = keypoints.double().numpy()
    vis = visible.numpy()
    images, anns = [], []
    for i in range(kp.shape[0]):
        flat = np.concatenate([kp[i], vis[i][:, None]], 1).reshape(-1)
        images.append({"id": i + 1})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                     "keypoints": flat.tolist(), "num_keypoints": int((vis[i] > 0).sum()),
                     "bbox": box[i].double().tolist(), "area": float(area[i])})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}


def keypoint_oks(pred, keypoints, area):
    """Per-keypoint OKS ``exp(−d² / (2·area·(2σ_k)²))``, COCO's per-keypoint term: [B, K]."""
    d2 = ((pred.double() - keypoints.double()) ** 2).sum(-1).numpy()
    var = (2 * COCO_SIGMAS) ** 2
    return np.exp(-d2 / (2 * var[None] * (area.double().numpy()[:, None] + np.spacing(1))))


def _spearman(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b).statistic)


def evaluate(pred, conf, gt: dict, val: dict) -> dict:
    """Scores predictions ``pred [N, K, 2]``, confidence ``[N, K]`` against the validation set
    ``val`` (train_data.validation_set) and its COCO ground truth ``gt``.

    Returns AP, AP50, AP75 (COCOeval, iouType keypoints, COCO sigmas), PCK@0.05 (distance per
    axis normalised by the box, over labelled keypoints, as mmpose's PCKAccuracy), and the
    Spearman correlations of keypoint confidence with keypoint OKS (over labelled keypoints)
    and of instance score with instance OKS (COCO's OKS, from the evaluator).
    """
    pred = pred.detach().cpu().double()
    conf = conf.detach().cpu().double()
    score = conf.mean(1)
    dets = []
    for i in range(pred.shape[0]):
        flat = torch.cat([pred[i], conf[i, :, None]], 1).reshape(-1)
        dets.append({"image_id": i + 1, "category_id": 1, "keypoints": flat.tolist(),
                     "score": float(score[i])})
    ev = coco_eval(_coco(gt), dets)
    instance_oks = np.array([float(np.asarray(ev.ious[(i + 1, 1)]).reshape(-1)[0])
                             for i in range(pred.shape[0])])

    labelled = val["visible"].numpy() > 0
    err = (pred - val["keypoints"].double()).abs() / val["box"][:, None, 2:].double()
    hit = (err.norm(dim=-1) < PCK_THR).numpy()
    kpt_oks = keypoint_oks(pred, val["keypoints"], val["area"])
    stats = ev.stats
    return {
        "AP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2]),
        "PCK": float(hit[labelled].mean()) if labelled.any() else math.nan,
        "rho_kpt": _spearman(conf.numpy()[labelled], kpt_oks[labelled]),
        "rho_inst": _spearman(score.numpy(), instance_oks),
        "OKS": float(instance_oks.mean()),
    }
