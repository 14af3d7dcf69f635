"""rspose-kernels: the ranking-based pose losses of RSPose as fused kernels for PyTorch.

The contract and the layout: docs/DESIGN.md. The submodules ``decode`` (decoders for logit
heads) and ``defaults`` (the pose-level defaults, one home each) are part of the public face.
"""
from . import decode, defaults  # noqa: F401  (public submodules: rk.decode, rk.defaults)
from ._version import __version__  # noqa: F401  (the version's one home: _version.py)
from .defaults import DELTA, HEATMAP_POS_THR, INSTANCE_WEIGHT, SIMCC_POS_THR
from .dispatch import available_algorithms, available_backends
from .losses import RankSortOutput, rank_sort_loss, simcc_rs_loss, spatial_rs_loss
from .pose import COCO_SIGMAS, RSPoseLoss, instance_sort_loss, simcc_instance_sort_loss

__all__ = [
    "COCO_SIGMAS",
    "DELTA",
    "HEATMAP_POS_THR",
    "INSTANCE_WEIGHT",
    "RSPoseLoss",
    "RankSortOutput",
    "SIMCC_POS_THR",
    "available_algorithms",
    "available_backends",
    "instance_sort_loss",
    "rank_sort_loss",
    "simcc_instance_sort_loss",
    "simcc_rs_loss",
    "spatial_rs_loss",
]
