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


def spatial_rs(output, target, target_weight):
    return rk.spatial_rs_loss(output, target, target_weight).loss


@dataclass(frozen=True)
class LossSpec:
    name: str
    mode: str            # "heatmap" or "simcc": which model and targets it trains
    fn: object           # (output, target, target_weight) -> scalar
    label: str           # for tables and plots


LOSSES = {spec.name: spec for spec in (
    LossSpec("mse", "heatmap", keypoint_mse_loss, "MSE (KeypointMSELoss)"),
    LossSpec("spatial_rs", "heatmap", spatial_rs, "spatial_rs_loss"),
    LossSpec("rspose", "heatmap", rk.RSPoseLoss(), "RSPoseLoss"),
    LossSpec("kl", "simcc", kl_discret_loss, "KL (KLDiscretLoss)"),
    LossSpec("rspose_simcc", "simcc", rk.RSPoseLoss(mode="simcc"), "RSPoseLoss(simcc)"),
)}
