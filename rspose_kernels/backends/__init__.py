"""Backends of the Rank & Sort core, and the record each one registers.

Every backend module defines ``BACKENDS``, a tuple of :class:`Backend` records (``native``
registers two, ``cpu`` and ``cuda``); ``rspose_kernels.dispatch`` iterates them and is the only
place that picks one. A record's ``rank_sort_rows`` follows this contract:

``rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad, algorithm="pairwise")
        -> (rank, sort, npos, grad)``
    scores  [M, L] contiguous, float16 / bfloat16 / float32 / float64.
    labels  [M, L] contiguous, the accumulation dtype of ``scores`` (float64 for float64
            scores, float32 otherwise), same device.
    delta   float >= 0 (``exact`` implies delta > 0); pos_thr float.
    algorithm  "pairwise", "bucketed" (docs/DESIGN.md §5b, docs/MATH.md) or "auto" (per row,
            by the backend's ``bucketed_plan``). Same results either way, up to summation
            order.
    rank, sort  [M] in the accumulation dtype: the per-row ranking and sorting errors of
            docs/DESIGN.md §2 (0 for an empty row).
    npos    [M] int32, the number of positives of each row.
    grad    [M, L] in the accumulation dtype, the per-row gradient of rank_row + sort_row
            (identity update, or the exact derivative when ``exact``), already divided by
            |P|; an empty tensor of shape [0] when ``need_grad`` is False.
Inputs are validated before a backend is called; backends check nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Tuple

import torch

# The ε of docs/DESIGN.md §2 (a positive's ranking term counts only where its false-positive
# mass exceeds it). csrc/rank_sort_math.h has the same value; tests/test_constants.py checks.
EPS = 1e-10

# The algorithm codes the compiled kernels and the Triton compaction take (csrc's Algorithm
# enum, checked against _C by tests/test_constants.py).
ALGORITHM_CODES = {"pairwise": 0, "bucketed": 1, "auto": 2}


@dataclass(frozen=True)
class Backend:
    """What a backend says about itself; ``dispatch`` reads nothing else.

    name           the user-facing name (``backend=`` of the losses).
    devices        the device types it runs on ("cpu", "cuda").
    algorithms     the algorithms of the core it implements, "pairwise" first.
    is_available   ``(device_type) -> bool``: whether it can run there, here and now.
    rank_sort_rows the contract above.
    bucketed_plan  ``(scores, labels, delta, pos_thr, algorithm) -> bool [M]``: the rows a
                   call with ``algorithm`` ("bucketed" or "auto") computes bucketed, by the
                   backend's own limits and cost constants (for the torch backend's split,
                   tests and the benchmark's reports).
    """
    name: str
    devices: Tuple[str, ...]
    algorithms: Tuple[str, ...]
    is_available: Callable[[str], bool]
    rank_sort_rows: Callable
    bucketed_plan: Callable


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a backend sums in: float64 for float64 scores, float32 for every other dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@lru_cache(maxsize=None)
def sm_count(index: int) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (grids of the GPU backends are sized
    from it, never from the data)."""
    return torch.cuda.get_device_properties(index).multi_processor_count
