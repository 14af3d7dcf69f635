"""Peak memory of one call."""
from __future__ import annotations

import contextlib
import os
import sys

import torch


@contextlib.contextmanager
def _fd2_silenced():
    """Kineto logs every profiler start/stop on fd 2 with no switch to turn it off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_cpu_bytes(run) -> float:
    """Peak of live torch CPU allocations during ``run()``.

    The profiler's memory events summed in time order: RSS would miss what the allocator
    reuses, and tracemalloc does not see torch's allocator.
    """
    from torch.profiler import ProfilerActivity, profile
    with _fd2_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return float(peak)


def peak_cuda_bytes(run) -> float:
    """Peak of ``torch.cuda.max_memory_allocated`` during ``run()``, above what was allocated
    before it (the inputs)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - base)


def peak_bytes(run, device_type: str) -> float:
    """Peak memory of ``run()`` on ``device_type``.

    Args:
        run: a callable, run once.
        device_type: "cpu" or "cuda".

    Returns:
        Bytes, or nan where the profiler does not work here (a note goes to stderr).
    """
    try:
        return (peak_cuda_bytes if device_type == "cuda" else peak_cpu_bytes)(run)
    except Exception as exc:  # a profiler that does not work here: no memory number
        print(f"note: peak memory not measured ({exc})", file=sys.stderr)
        return float("nan")
