"""rspose-kernels: the ranking-based pose losses of RSPose as fused kernels for PyTorch."""
from .dispatch import available_backends
from .losses import RankSortOutput, rank_sort_loss, simcc_rs_loss, spatial_rs_loss

__all__ = ["RankSortOutput", "available_backends", "rank_sort_loss", "simcc_rs_loss",
           "spatial_rs_loss"]
__version__ = "0.1.0"
