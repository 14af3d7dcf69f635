"""Timing a call's forward, backward and both, with the timers users know.

CUDA: ``triton.testing.do_bench`` (CUDA events, L2 flushed before every run, gradients reset).
CPU: ``torch.utils.benchmark.Timer.adaptive_autorange`` on wall time, or on process CPU time
(``time.process_time``, one thread) for ``--cpu-time``, which a loaded machine disturbs far less.
Each mode is timed as its own series: ``fwd`` the call, ``bwd`` ``loss.backward`` on a graph
kept for it (``retain_graph``), ``full`` the two together. The CPU quick policy times ``full``
alone, a few single calls each (``Timer.timeit(1)``: ``adaptive_autorange`` first sizes a
block over 0.05 s, which alone made the quick run take 26 s).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from bench.harness.memory import peak_bytes

MODES = ("fwd", "bwd", "full")


@dataclass(frozen=True)
class Policy:
    """How long a provider is timed.

    Attributes:
        warmup: untimed calls first (the last one measures peak memory).
        min_time: seconds of timed runs per mode at least, and then until the spread (IQR /
            median) is within 10 % ...
        max_time: ... but no more than this many seconds per mode (a call longer than it is
            timed once; on CUDA ``min_time`` alone sets the budget).
        loop_positives: the rs_loop sample has at most this many positives ...
        loop_pairs: ... and about this many pairs.
        modes: the modes timed (of ``MODES``); the others are not measured.
        single_calls: CPU: time single calls (``Timer.timeit(1)``, at least 3, until
            ``min_time``) instead of ``adaptive_autorange``'s blocks.
    """
    warmup: int
    min_time: float
    max_time: float
    loop_positives: int
    loop_pairs: int
    modes: tuple = MODES
    single_calls: bool = False


POLICIES = {
    # quick: fwd+bwd only (no separate fwd / bwd series), single calls; see bench/run.py.
    ("cpu", "quick"): Policy(1, 0.02, 0.05, 30, 150_000, modes=("full",), single_calls=True),
    ("cpu", "full"): Policy(1, 0.3, 1.0, 2_000, 50_000_000),   # <= ~1 s a mode: minutes in all
    ("cuda", "quick"): Policy(2, 0.05, 1.0, 300, 5_000_000),
    ("cuda", "full"): Policy(2, 0.25, 5.0, 2_000, 50_000_000),
}

# Stop a CPU series once IQR / median is below this (after min_time).
SPREAD = 0.1


def _clear(leaves):
    for t in leaves:
        t.grad = None


def _series_cuda(fn, leaves, policy: Policy) -> list[float]:
    from triton.testing import do_bench
    ms = policy.min_time * 1e3
    return list(do_bench(fn, warmup=max(1, int(ms / 4)), rep=max(1, int(ms)),
                         grad_to_none=leaves, return_mode="all"))


def _series_cpu(stmt: str, setup: str, env: dict, policy: Policy, cpu_time: bool):
    from torch.utils.benchmark import Timer
    timer = Timer(stmt=stmt, setup=setup, globals=env,
                  timer=time.process_time if cpu_time else time.perf_counter,
                  num_threads=1 if cpu_time else torch.get_num_threads())
    if policy.single_calls:
        times, spent = [], 0.0
        while len(times) < 3 or (spent < policy.min_time and spent < policy.max_time):
            t = timer.timeit(1).times[0]
            times.append(t * 1e3)
            spent += t
        return times
    # max_run_time 0 would mean "no limit" to the Timer: the smallest positive one instead.
    m = timer.adaptive_autorange(threshold=SPREAD, min_run_time=policy.min_time,
                                 max_run_time=max(policy.max_time, 1e-9))
    # Per run: each block's mean, once per run of the block (the reps column counts runs).
    return [t * 1e3 for t in m.times for _ in range(m.number_per_run)]


def time_modes(fn, leaves, device_type: str, policy: Policy, cpu_time: bool = False,
               scale: float = 1.0):
    """Times ``fn`` (a call returning a scalar loss) forward, backward and both.

    Args:
        fn: ``() -> loss``, on inputs among ``leaves`` that require grad.
        leaves: tensors whose ``.grad`` is reset before each run.
        device_type: "cpu" or "cuda".
        policy: warm-up and time budget.
        cpu_time: CPU only: process CPU time on one thread instead of wall time.
        scale: every time is multiplied by it (rs_loop: its sample stands for the case).

    Returns:
        ``({mode: [ms per run, ...]}, peak bytes or nan)`` with the modes of ``policy.modes``
        (in ``MODES`` order).
    """
    def once():
        _clear(leaves)
        fn().backward()

    peak = float("nan")
    for i in range(policy.warmup):
        if i == policy.warmup - 1:
            peak = peak_bytes(once, device_type)
        else:
            once()
    times = {}
    if device_type == "cuda":
        if "fwd" in policy.modes:
            times["fwd"] = _series_cuda(fn, leaves, policy)
        if "bwd" in policy.modes:
            loss = fn()
            times["bwd"] = _series_cuda(lambda: loss.backward(retain_graph=True), leaves, policy)
            del loss
        if "full" in policy.modes:
            times["full"] = _series_cuda(once, leaves, policy)
    else:
        env = {"fn": fn, "clear": _clear, "leaves": leaves}
        stmts = {"fwd": ("clear(leaves); fn()", ""),
                 "bwd": ("clear(leaves); loss.backward(retain_graph=True)", "loss = fn()"),
                 "full": ("clear(leaves); fn().backward()", "")}
        for mode in policy.modes:
            times[mode] = _series_cpu(*stmts[mode], env, policy, cpu_time)
    return {m: [t * scale for t in times[m]] for m in MODES if m in times}, peak


def timer_note(device_type: str, cpu_time: bool) -> str:
    """What the run's times are, for the console footer."""
    if device_type == "cuda":
        return "triton.testing.do_bench (CUDA events, L2 flushed)"
    if cpu_time:
        return "torch.utils.benchmark.Timer on process_time, 1 thread"
    return "torch.utils.benchmark.Timer (wall time)"
