"""The pose-level defaults: one home (rspose_kernels/defaults.py), used everywhere.

Their values are claims about training, measured by bench/train_sweep.py (README, "Choosing
τ, δ and the learning rate"); this pins them so a change is deliberate, and checks that every
public entry point takes them from that one place. rank_sort_loss keeps τ = 0.
"""
import inspect
import math

import torch

import rspose_kernels as rk
from rspose_kernels import defaults
from rspose_kernels.testing import heatmap_case, simcc_case


def test_the_measured_values():
    assert defaults.HEATMAP_POS_THR == 0.5
    assert defaults.SIMCC_POS_THR == math.exp(-4.5)
    assert defaults.DELTA == 0.5
    assert defaults.INSTANCE_WEIGHT == 1.0
    assert defaults.CORE_POS_THR == 0.0
    assert (rk.HEATMAP_POS_THR, rk.SIMCC_POS_THR, rk.DELTA, rk.INSTANCE_WEIGHT) == (
        defaults.HEATMAP_POS_THR, defaults.SIMCC_POS_THR, defaults.DELTA,
        defaults.INSTANCE_WEIGHT)


def test_signatures_take_them():
    core = inspect.signature(rk.rank_sort_loss).parameters
    assert core["pos_thr"].default == defaults.CORE_POS_THR
    assert core["delta"].default == defaults.DELTA
    inst = inspect.signature(rk.instance_sort_loss).parameters
    assert inst["pos_thr"].default == defaults.HEATMAP_POS_THR
    assert inst["delta"].default == defaults.DELTA
    assert inspect.signature(rk.RSPoseLoss).parameters["instance_weight"].default == \
        defaults.INSTANCE_WEIGHT
    heat, simcc = rk.RSPoseLoss(), rk.RSPoseLoss(mode="simcc")
    assert (heat.pos_thr, heat.delta) == (defaults.HEATMAP_POS_THR, defaults.DELTA)
    assert simcc.pos_thr == defaults.SIMCC_POS_THR


def test_wrappers_use_them_by_default():
    heat, target, tw = heatmap_case(2, 3, 9, 7, 1.0, seed=80)
    a = rk.spatial_rs_loss(heat, target, tw, backend="torch")
    b = rk.spatial_rs_loss(heat, target, tw, pos_thr=defaults.HEATMAP_POS_THR,
                           delta=defaults.DELTA, backend="torch")
    c = rk.spatial_rs_loss(heat, target, tw, pos_thr=0.0, backend="torch")
    assert torch.equal(torch.stack(a), torch.stack(b))
    assert not torch.equal(torch.stack(a), torch.stack(c))   # τ matters on these targets
    pred, target, tw = simcc_case(2, 3, 40, 30, 3.0, seed=81)
    a = rk.simcc_rs_loss(pred, target, tw, backend="torch")
    b = rk.simcc_rs_loss(pred, target, tw, pos_thr=defaults.SIMCC_POS_THR, backend="torch")
    assert torch.equal(torch.stack(a), torch.stack(b))
