"""The losses bench/train.py compares, each ``(output, target, target_weight) -> scalar``.

The baselines follow mmpose's definitions (re-implemented here; mmpose is not needed):

- ``KeypointMSELoss(use_target_weight=True)`` (mmpose 1.x): ``mean(w·(output − target)²)``
  over every heatmap pixel, the keypoint weights broadcast over H × W;
- ``KLDiscretLoss(use_target_weight=True)`` (beta 1, no label softmax, as the SimCC-ResNet
  configs): per row ``mean_bins KL(target ‖ softmax(β·pred))`` computed as ``KLDivLoss`` on
  ``log_softmax(β·pred)``, times the row's weight, summed over rows and over x and y,
  divided by K.

The ranking losses are this package's public API (``rk.spatial_rs_loss``, ``rk.RSPoseLoss``),
with their defaults.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import rspose_kernels as rk


def keypoint_mse_loss(output, target, target_weight):
    w = target_weight[..., None, None]
    return (F.mse_loss(output, target, reduction="none") * w).mean()


def kl_discret_loss(output, target, target_weight, beta: float = 1.0):
    k = output[0].shape[1]
    weight = target_weight.reshape(-1)
    loss = 0
    for pred, labels in zip(output, target):
        pred = pred.reshape(-1, pred.shape[-1])
        labels = labels.reshape(-1, labels.shape[-1])
        log_pt = F.log_softmax(pred * beta, dim=1)
        row = F.kl_div(log_pt, labels, reduction="none").mean(1)
        loss = loss + (row * weight).sum()
    return loss / k


class SpatialRS:
    """``rk.spatial_rs_loss(...).loss`` with fixed keyword options (the package's defaults
    for those not given)."""

    def __init__(self, **opts):
        self.opts = opts

    def __call__(self, output, target, target_weight):
        return rk.spatial_rs_loss(output, target, target_weight, **self.opts).loss


class KeypointScopeRSPose:
    """A sweep-only variant of ``rk.RSPoseLoss`` (heatmap): the spatial ranking of each
    keypoint *type* over the whole batch — one row of B·H·W pixels per keypoint — instead of
    one row per heatmap; Instance-Sort as in RSPoseLoss. Heatmaps of weight 0 leave the row:
    their scores are pushed far below every positive (H = 0 against all of them, so they
    take no gradient and no part in the ranking) and their labels set to 0."""

    def __init__(self, instance_weight: float = 1.0, **opts):
        self.opts = opts
        self.instance_weight = instance_weight
        self.instance = rk.RSPoseLoss(instance_weight=instance_weight, **opts)

    def __call__(self, output, target, target_weight):
        b, k = output.shape[:2]
        keep = (target_weight > 0)[..., None, None]
        floor = output.detach().amin() - 4 * self.instance.delta - 1
        scores = torch.where(keep, output, floor).transpose(0, 1).reshape(k, -1)
        labels = torch.where(keep, target, 0).transpose(0, 1).reshape(k, -1)
        opts = {o: v for o, v in self.opts.items() if o in ("pos_thr", "delta")}
        opts.setdefault("pos_thr", self.instance.pos_thr)
        spatial = rk.rank_sort_loss(scores, labels, **opts).loss
        if self.instance_weight == 0:
            return spatial
        inst = rk.instance_sort_loss(output, target, target_weight, delta=self.instance.delta,
                                     pos_thr=self.instance.pos_thr)
        return spatial + self.instance_weight * inst


@dataclass(frozen=True)
class LossSpec:
    name: str
    mode: str            # "heatmap" or "simcc": which model and targets it trains
    fn: object           # (output, target, target_weight) -> scalar
    label: str           # for tables and plots


LOSSES = {spec.name: spec for spec in (
    LossSpec("mse", "heatmap", keypoint_mse_loss, "MSE (KeypointMSELoss)"),
    LossSpec("spatial_rs", "heatmap", SpatialRS(), "spatial_rs_loss"),
    LossSpec("rspose", "heatmap", rk.RSPoseLoss(), "RSPoseLoss"),
    LossSpec("kl", "simcc", kl_discret_loss, "KL (KLDiscretLoss)"),
    LossSpec("rspose_simcc", "simcc", rk.RSPoseLoss(mode="simcc"), "RSPoseLoss(simcc)"),
)}


def _opts_label(opts: dict) -> str:
    short = {"pos_thr": "τ", "delta": "δ", "instance_weight": "λ", "scope": "scope"}
    return ", ".join(f"{short.get(k, k)} {v:g}" if isinstance(v, float) else
                     f"{short.get(k, k)} {v}" for k, v in sorted(opts.items()))


def build(name: str, **opts) -> LossSpec:
    """The loss ``name`` of LOSSES with options (the sweep's variants): for the ranking losses
    ``pos_thr``, ``delta``, ``instance_weight`` (RSPoseLoss) and ``scope`` ("heatmap", the
    default, or "keypoint": KeypointScopeRSPose). No options: the LOSSES entry itself."""
    base = LOSSES[name]
    if not opts:
        return base
    if name in ("mse", "kl"):
        raise ValueError(f"{name}: takes no options, got {sorted(opts)}")
    opts = dict(opts)
    scope = opts.pop("scope", "heatmap")
    shown = dict(opts, **({"scope": scope} if scope != "heatmap" else {}))
    label = f"{base.label} ({_opts_label(shown)})"
    if name == "spatial_rs":
        fn = SpatialRS(**opts)
    elif scope == "keypoint":
        if name != "rspose":
            raise ValueError(f"scope='keypoint': only for 'rspose', not {name!r}")
        fn = KeypointScopeRSPose(**opts)
    elif scope == "heatmap":
        fn = rk.RSPoseLoss(mode=base.mode, **opts)
    else:
        raise ValueError(f"scope: expected 'heatmap' or 'keypoint', got {scope!r}")
    return LossSpec(name, base.mode, fn, label)
