"""Backends of the Rank & Sort core.

Every backend module exposes the same two functions; `rspose_kernels.dispatch` is the only
place that picks one (and knows which algorithms each has).

``is_available(device_type: str) -> bool``
    Whether the backend can run on tensors of this device type ("cpu" or "cuda") here.

``rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad)
        -> (rank, sort, npos, grad)``
    scores  [M, L] contiguous, float16 / bfloat16 / float32 / float64.
    labels  [M, L] contiguous, the accumulation dtype of ``scores`` (float64 for float64
            scores, float32 otherwise), same device.
    delta   float >= 0 (``exact`` implies delta > 0); pos_thr float.
    rank, sort  [M] in the accumulation dtype: the per-row ranking and sorting errors of
            SPEC §2 (0 for an empty row).
    npos    [M] int32, the number of positives of each row.
    grad    [M, L] in the accumulation dtype, the per-row gradient of rank_row + sort_row
            (identity update, or the exact derivative when ``exact``), already divided by
            |P|; an empty tensor of shape [0] when ``need_grad`` is False.
    algorithm  keyword, only for backends with more than one algorithm (dispatch.ALGORITHMS;
            pairwise-only backends are called without it): "pairwise" (default), "bucketed"
            (SPEC §5b, docs/MATH.md) or "auto" (per row, by cost_model). Same results
            either way, up to summation order.
Inputs are validated before a backend is called; backends check nothing.
"""
from functools import lru_cache

import torch


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a backend sums in: float64 for float64 scores, float32 for every other dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@lru_cache(maxsize=None)
def sm_count(index: int) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (grids of the GPU backends are sized
    from it, never from the data)."""
    return torch.cuda.get_device_properties(index).multi_processor_count
