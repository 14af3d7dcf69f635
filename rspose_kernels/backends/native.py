"""The `cpu` and `cuda` backends: the compiled kernels of ``rspose_kernels._C`` (csrc/).

Contract: rspose_kernels/backends/__init__.py. This module allocates every tensor (outputs,
and the CUDA workspace, through torch's caching allocator) and describes each call in one
``_C.RankSortParams`` (csrc/rank_sort_params.h): raw pointers, sizes, a dtype code, the
algorithm and cost constants, and the threads or the current stream; ``_C`` links no torch
and checks the struct once before any kernel sees it. Importing it raises
ImportError when ``_C`` was not built; dispatch then treats both backends as absent.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch

from . import ALGORITHM_CODES, Backend, accumulation_dtype, cost_model
from . import sm_count as _sm_count  # a module global, so tests can stand in a count

try:
    from rspose_kernels import _C
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(f"rspose_kernels._C is not built ({exc}); the 'cpu' and 'cuda' "
                      "backends are unavailable (pip install -e . with cmake, ninja and "
                      "pybind11 present builds it)") from exc

_DTYPE_CODE = {
    torch.float32: _C.FLOAT32,
    torch.float64: _C.FLOAT64,
    torch.float16: _C.FLOAT16,
    torch.bfloat16: _C.BFLOAT16,
}


# The kernels' cost constants (cost_model.CostModel), passed to _C at each call.
# CPU: fitted on the 2-core CPU machine over two runs (the package's τ and τ = 0) of
#   python3 -m bench.run --providers cpu/pairwise,cpu/bucketed --cpu-time [--pos-thr 0]
# by `python3 -m bench.calibrate --run RUN_A,RUN_B` (docs/MEASUREMENTS.md, "cpu cost
# constants").
CPU_COST = cost_model.CostModel(per_negative=6.14, per_positive=132.0, positive_pairs=1.79)
# CUDA: not measured on a GPU yet; set from the kernels' shape (docs/MEASUREMENTS.md, "cuda
# cost constants"). With them the benchmark shapes' init rows go bucketed and the trained ones
# stay pairwise; bench/cuda_sweep.py sweeps per_negative (RSPOSE_CUDA_BUCKET_COST) on a GPU.
CUDA_COST = cost_model.CostModel(per_negative=4.0, per_positive=16.0, positive_pairs=1.0,
                                 bucketed_positive_pairs=1.0)


def is_available(device_type: str) -> bool:
    if device_type == "cpu":
        return True
    if device_type == "cuda":
        return _cuda_usable()
    return False


@lru_cache(maxsize=None)
def _cuda_usable() -> bool:
    # _C's own runtime must see the devices too: a driver older than the CUDA _C was built
    # with shows none, and the backend is then simply unavailable.
    return bool(_C.has_cuda()) and torch.cuda.is_available() and _C.cuda_device_count() > 0


def rank_sort_rows(scores, labels, delta, pos_thr, exact, need_grad, algorithm="pairwise"):
    if scores.device.type == "cuda":
        return _rank_sort_cuda(scores, labels, delta, pos_thr, exact, need_grad, algorithm)
    return _rank_sort_cpu(scores, labels, delta, pos_thr, exact, need_grad, algorithm)


def _params(s, y, delta, pos_thr, exact, need_grad, algorithm, cost, outputs):
    """The ``_C.RankSortParams`` of one call (the fields both kernels read).

    Args:
        s: [M, L] contiguous scores (the kernel's input dtype).
        y: [M, L] contiguous labels in the accumulation dtype.
        delta, pos_thr, exact, need_grad, algorithm: as ``rank_sort_rows``.
        cost: the backend's :class:`cost_model.CostModel`.
        outputs: (rank, sort, npos, grad); grad is not read when ``need_grad`` is False.

    Returns:
        A filled ``_C.RankSortParams`` (the device-specific fields left to the caller).
    """
    rank, sort, npos, grad = outputs
    p = _C.RankSortParams()
    p.scores, p.labels = s.data_ptr(), y.data_ptr()
    p.M, p.L = s.shape
    p.dtype = _DTYPE_CODE[s.dtype]
    p.delta, p.pos_thr = float(delta), float(pos_thr)
    p.exact, p.need_grad = bool(exact), bool(need_grad)
    p.rank, p.sort, p.npos = rank.data_ptr(), sort.data_ptr(), npos.data_ptr()
    p.grad = grad.data_ptr() if need_grad else 0
    p.algorithm = ALGORITHM_CODES[algorithm]
    p.cost = _C.CostModel(*cost)
    return p


def _outputs(m, length, need_grad, acc, device):
    rank = torch.empty(m, dtype=acc, device=device)
    sort = torch.empty(m, dtype=acc, device=device)
    npos = torch.empty(m, dtype=torch.int32, device=device)
    grad = torch.empty((m, length) if need_grad else (0,), dtype=acc, device=device)
    return rank, sort, npos, grad


def _rank_sort_cpu(scores, labels, delta, pos_thr, exact, need_grad, algorithm="pairwise"):
    acc = accumulation_dtype(scores.dtype)
    # The CPU kernel computes in float32/float64; half scores are widened here (exactly).
    s = scores.to(acc).contiguous()
    y = labels.to(acc).contiguous()
    out = _outputs(*s.shape, need_grad, acc, s.device)
    p = _params(s, y, delta, pos_thr, exact, need_grad, algorithm, CPU_COST, out)
    p.num_threads = torch.get_num_threads()
    _C.rank_sort_cpu(p)
    return out


def _rank_sort_cuda(scores, labels, delta, pos_thr, exact, need_grad, algorithm="pairwise"):
    acc = accumulation_dtype(scores.dtype)
    s = scores.contiguous()
    y = labels.to(acc).contiguous()
    dev = s.device
    out = _outputs(*s.shape, need_grad, acc, dev)
    p = _params(s, y, delta, pos_thr, exact, need_grad, algorithm, cuda_costs(), out)
    p.device = dev.index if dev.index is not None else torch.cuda.current_device()
    p.tuning = cuda_tuning(p.device)
    nbytes = _C.cuda_workspace_bytes(p)
    work = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=dev)
    p.workspace, p.workspace_bytes = work.data_ptr(), nbytes
    p.stream = torch.cuda.current_stream(dev).cuda_stream
    _C.rank_sort_cuda(p)
    return out


# The CUDA kernels' launch parameters that only a GPU measurement can settle
# (csrc/cuda/rank_sort_cuda.h, CudaTuning), as environment variables for the benchmark's
# sweeps (bench/gpu_check.sh); the defaults are the struct's. Read at each call (a few dict
# lookups) so that a sweep in one process sees each setting.
TUNING_ENV = {
    "ctas_per_sm": "RSPOSE_CUDA_CTAS_PER_SM",
    "warp_items_per_sm": "RSPOSE_CUDA_WARP_ITEMS_PER_SM",
    "max_split": "RSPOSE_CUDA_MAX_SPLIT",
}


def cuda_tuning(index: int):
    tuning = _C.CudaTuning()
    tuning.sms = _sm_count(index)
    for field, var in TUNING_ENV.items():
        value = os.environ.get(var)
        if value is not None:
            try:
                setattr(tuning, field, max(1, int(value)))
            except ValueError:
                raise ValueError(f"{var}: expected a positive integer, got {value!r}") from None
    return tuning


def cuda_costs() -> cost_model.CostModel:
    """CUDA_COST, with per_negative from RSPOSE_CUDA_BUCKET_COST when set (the per-row
    threshold bench/cuda_sweep.py sweeps). Read at each call, like the other RSPOSE_CUDA_*
    knobs."""
    value = os.environ.get("RSPOSE_CUDA_BUCKET_COST")
    if value is None:
        return CUDA_COST
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise ValueError(f"RSPOSE_CUDA_BUCKET_COST: expected a positive number, got {value!r}")
    return CUDA_COST._replace(per_negative=v)


def cuda_max_positives(length: int, dtype: torch.dtype) -> int:
    """The most positives a row of ``length`` may have for the CUDA bucketed path (its sort
    in shared memory and its workspace; csrc/cuda's np_cap)."""
    return _C.cuda_max_positives(length, _DTYPE_CODE[dtype])


def _plan_cpu(scores, labels, delta, pos_thr, algorithm="auto"):
    return cost_model.plan_rows(scores, labels, delta, pos_thr, algorithm, CPU_COST,
                                max_positives=scores.shape[1])


def _plan_cuda(scores, labels, delta, pos_thr, algorithm="auto"):
    return cost_model.plan_rows(scores, labels, delta, pos_thr, algorithm, cuda_costs(),
                                max_positives=cuda_max_positives(scores.shape[1], scores.dtype))


# Both kernels have both algorithms (csrc/cpu/rank_sort_bucketed_cpu.h,
# csrc/cuda/rank_sort_bucketed_kernels.cuh) and choose per row under "auto". They share
# is_available: dispatch asks a record only about the devices it lists.
BACKENDS = (
    Backend(name="cpu", devices=("cpu",), algorithms=("pairwise", "bucketed"),
            is_available=is_available,
            rank_sort_rows=_rank_sort_cpu, bucketed_plan=_plan_cpu),
    Backend(name="cuda", devices=("cuda",), algorithms=("pairwise", "bucketed"),
            is_available=is_available,
            rank_sort_rows=_rank_sort_cuda, bucketed_plan=_plan_cuda),
)
