"""rspose-kernels: the ranking-based pose losses of RSPose as fused kernels for PyTorch."""
from . import decode, defaults
from .defaults import DELTA, HEATMAP_POS_THR, INSTANCE_WEIGHT, SIMCC_POS_THR
from .dispatch import available_algorithms, available_backends
from .losses import RankSortOutput, rank_sort_loss, simcc_rs_loss, spatial_rs_loss
from .pose import COCO_SIGMAS, RSPoseLoss, instance_sort_loss, simcc_instance_sort_loss

__all__ = ["COCO_SIGMAS", "DELTA", "HEATMAP_POS_THR", "INSTANCE_WEIGHT", "SIMCC_POS_THR", "RSPoseLoss", "RankSortOutput", "available_algorithms",
           "available_backends",
           "instance_sort_loss", "rank_sort_loss", "simcc_instance_sort_loss",
           "simcc_rs_loss", "spatial_rs_loss"]
from ._version import __version__  # noqa: F401  (one home: _version.py)
