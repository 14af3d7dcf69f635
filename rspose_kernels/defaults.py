"""The pose-level defaults, one home each: values bench/train_sweep.py measured best
(README, "Choosing τ, δ and the learning rate", has the table, seeds and spread).

``rank_sort_loss`` itself keeps τ = 0: its rows are generic, not Gaussian heatmaps.
"""
from __future__ import annotations

import math

# The smoothing half-width δ of the step H (logit units).
DELTA = 0.5
# rank_sort_loss: every label above 0 is a positive.
CORE_POS_THR = 0.0
# Heatmaps (spatial_rs_loss, RSPoseLoss, instance_sort_loss): a pixel is a positive when its
# target Gaussian is above this. 0.5 keeps the pixels within 1.18σ of the joint (5 at σ 1,
# 21 at σ 2); a lower τ spends the loss on the Gaussian's tails and flattens the peak
# (docs/MEASUREMENTS.md, "Heatmap τ").
HEATMAP_POS_THR = 0.5
# SimCC (simcc_rs_loss, RSPoseLoss(mode="simcc")), on labels rescaled to peak 1; exp(-4.5)
# is "within 3σ of the joint".
SIMCC_POS_THR = math.exp(-4.5)
# RSPoseLoss: the weight λ of Instance-Sort beside the spatial term.
INSTANCE_WEIGHT = 1.0
