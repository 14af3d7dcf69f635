"""Sweep the CUDA backend's per-row algorithm threshold and launch parameters on a GPU (what
bench/gpu_check.sh's `sweep` runs).

Every call is the backend's forward + gradient (one ``rank_sort_rows``, float32, identity
gradient, δ = 0.5) at the benchmark shapes and regimes, timed by CUDA events (median of --reps).

1. The threshold: per call, the algorithm forced "pairwise", forced "bucketed", and "auto"
   with the cost model's per-negative constant RSPOSE_CUDA_BUCKET_COST at each of
   BUCKET_COSTS (native.py reads it at each call; larger sends fewer rows to the bucketed
   path). Each line gives the median and how many of the call's non-empty rows that setting
   computes bucketed (counted on the host: cost_model.plan_rows with native.CUDA_COST and
   that per-negative cost; rows above NP_cap stay pairwise); `*` marks the
   call's fastest setting.
2. The launch parameters (csrc/cuda/rank_sort_cuda.h, CudaTuning; native.py reads
   RSPOSE_CUDA_CTAS_PER_SM, RSPOSE_CUDA_WARP_ITEMS_PER_SM, RSPOSE_CUDA_MAX_SPLIT), one at a
   time, the others at their defaults, on the pairwise kernels (algorithm forced).

The output ends with machine-readable lines for setting the defaults:
    best bucket_cost per call: <call>=<cost> ...
    best bucket_cost overall: <cost> ...
bench.run keeps measuring the defaults.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time

import torch

import rspose_kernels as rk
from bench.cases import make_case
from rspose_kernels.backends import cost_model, native
from rspose_kernels.losses import DEFAULT_DELTA
from rspose_kernels.testing import REGIMES, SHAPES

GRID = {   # env var -> values tried (one at a time, the others at their default)
    "RSPOSE_CUDA_CTAS_PER_SM": (2, 4, 8, 16),
    "RSPOSE_CUDA_WARP_ITEMS_PER_SM": (8, 16, 64),
    "RSPOSE_CUDA_MAX_SPLIT": (8, 32, 128),
}
BUCKET_COST_ENV = "RSPOSE_CUDA_BUCKET_COST"    # read by native.py at each call
BUCKET_COSTS = (0.25, 0.5, 1, 2, 4, 8, 16, 64)
# (label, algorithm, bucket cost or None)
THRESHOLD_SETTINGS = ([("pairwise", "pairwise", None), ("bucketed", "bucketed", None)]
                      + [(f"auto cost={c:g}", "auto", c) for c in BUCKET_COSTS])
# An auto setting this close to a call's fastest auto setting counts as equally good.
TIE = 0.03


def calls(device):
    """(name, scores [M, L], labels [M, L], pos_thr) at the benchmark shapes, both regimes, the
    rows the losses rank (bench.cases.make_case), and one Instance-Sort row of B·K items."""
    out = []
    for regime in REGIMES:
        for shape in SHAPES:
            case = make_case(shape, regime, device=device)
            for axis, (scores, labels) in zip("xy" if case.simcc else " ", case.groups):
                name = f"{shape}-{axis}" if case.simcc else shape
                out.append((f"{name}/{regime}", scores.contiguous(), labels.contiguous(),
                            case.pos_thr))
    b, k = SHAPES["vitpose"][:2]
    g = torch.Generator().manual_seed(0)
    out.append(("vitpose-instance", torch.randn(1, b * k, generator=g).to(device),
                (torch.rand(1, b * k, generator=g) * 0.999 + 0.001).to(device), 0.0))
    return out


@contextlib.contextmanager
def env_set(var, value):
    """``var`` set to ``value`` inside (nothing done for ``var`` None), restored after."""
    if var is None:
        yield
        return
    old = os.environ.get(var)
    os.environ[var] = str(value)
    try:
        yield
    finally:
        if old is None:
            del os.environ[var]
        else:
            os.environ[var] = old


def bucketed_rows(scores, labels, pos_thr, algorithm, per_negative=None, cost=None,
                  delta=DEFAULT_DELTA) -> int:
    """How many rows the CUDA backend computes bucketed for ``algorithm``.

    A host-side count on any device, the CUDA backend's plan with an explicit cost:
    cost_model.plan_rows with the kernel's capacity (n ≤ NP_cap), for "auto" with the cost
    model ``cost`` (default: native.cuda_costs()) whose per-negative constant is replaced by
    ``per_negative`` when given.

    Returns:
        The number of rows.
    """
    if algorithm == "pairwise":
        return 0
    cost = native.cuda_costs() if cost is None else cost
    if per_negative is not None:
        cost = cost._replace(per_negative=float(per_negative))
    cap = native.cuda_max_positives(scores.shape[1], scores.dtype)
    return int(cost_model.plan_rows(scores, labels, delta, pos_thr, algorithm, cost, cap).sum())


def time_call(s, y, tau, algorithm="auto", reps=10):
    """Median ms of ``reps`` forward + gradient calls (after 2 untimed)."""
    times = []
    for i in range(reps + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        native.rank_sort_rows(s, y, DEFAULT_DELTA, tau, False, True, algorithm)
        end.record()
        end.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


# ----------------------------------------------------------------------------- the threshold

def threshold_sweep(cases, timer, out_of_time, count=bucketed_rows, print_=print):
    """Times every THRESHOLD_SETTINGS entry on every case, a case at a time (its lines
    printed together, the fastest marked). ``timer(s, y, tau, algorithm)`` -> ms, called with
    RSPOSE_CUDA_BUCKET_COST set for the auto settings; ``out_of_time()`` -> bool stops it.
    Returns {call: [(ms, label, algorithm, cost, bucketed rows)]} for the calls done."""
    results = {}
    print_(f"{'setting':16s} {'call':22s} {'median ms':>10s} {'bucketed rows':>14s}")
    for name, s, y, tau in cases:
        rows = int((y > tau).any(1).sum())
        measured = []
        for label, algorithm, cost in THRESHOLD_SETTINGS:
            if out_of_time():
                break
            with env_set(BUCKET_COST_ENV if cost is not None else None, cost):
                ms = timer(s, y, tau, algorithm)
            measured.append((ms, label, algorithm, cost, count(s, y, tau, algorithm, cost)))
        if len(measured) < len(THRESHOLD_SETTINGS):
            print_(f"(deadline: {name} not measured)")
            break
        fastest = min(measured)[0]
        for ms, label, _, _, picked in measured:
            print_(f"{label:16s} {name:22s} {ms:10.4f} {f'{picked}/{rows}':>14s}"
                   f"{'  *' if ms == fastest else ''}")
        results[name] = measured
    return results


def threshold_summary(results) -> list[str]:
    """The machine-readable end of the output: the best per-negative cost per call and one
    overall (the lowest geometric-mean slowdown against each call's fastest setting)."""
    if not results:
        return ["best bucket_cost per call: (none measured)"]
    per_call, ranges, algos = [], [], []
    for name, measured in results.items():
        auto = [(ms, c) for ms, _, a, c, _ in measured if a == "auto"]
        best_ms, best_c = min(auto)
        good = sorted(c for ms, c in auto if ms <= best_ms * (1 + TIE))
        per_call.append(f"{name}={best_c:g}")
        ranges.append(f"{name}={good[0]:g}..{good[-1]:g}")
        ms, label = min((ms, label) for ms, label, *_ in measured)
        algos.append(f"{name}={label.replace(' ', '_')}")
    slowdown = {}
    for c in BUCKET_COSTS:
        logs = []
        for name, measured in results.items():
            fastest = min(m[0] for m in measured)
            ms = next(m[0] for m in measured if m[3] == c)
            logs.append((math.log(ms / fastest) if fastest > 0 else 0.0, name))
        slowdown[c] = (math.exp(sum(v for v, _ in logs) / len(logs)), max(logs))
    best = min(BUCKET_COSTS, key=lambda c: (slowdown[c][0], c))
    geo, (worst, worst_call) = slowdown[best]
    return [
        "fastest setting per call: " + " ".join(algos),
        f"bucket_cost within {TIE:.0%} of each call's best auto: " + " ".join(ranges),
        "best bucket_cost per call: " + " ".join(per_call),
        f"best bucket_cost overall: {best:g} (geometric-mean slowdown against each call's "
        f"fastest setting {geo:.3f}x, worst {math.exp(worst):.3f}x on {worst_call}; "
        f"{len(results)} calls; now {native.CUDA_COST})",
    ]


# ----------------------------------------------------------------------------- launch grid

def grid_sweep(cases, timer, out_of_time, print_=print):
    """Times each GRID setting (and the defaults) on every case with the algorithm forced
    "pairwise" (the kernels these parameters shape); returns {call: [(ms, label)]}."""
    settings = [("defaults", None, None)] + [(f"{var}={v}", var, v)
                                             for var, vals in GRID.items() for v in vals]
    best = {}
    print_(f"{'setting':38s} {'call':22s} {'median ms':>10s}")
    for label, var, value in settings:
        with env_set(var, value):
            for name, s, y, tau in cases:
                if out_of_time():
                    print_("(deadline: the rest of the grid not measured)")
                    return best
                if var == "RSPOSE_CUDA_MAX_SPLIT" and "instance" not in name:
                    continue   # splitting only ever happens for few rows
                ms = timer(s, y, tau, "pairwise")
                best.setdefault(name, []).append((ms, label))
                print_(f"{label:38s} {name:22s} {ms:10.4f}")
    return best


def grid_summary(best) -> list[str]:
    lines = ["fastest launch setting per call:"]
    for name, rows in best.items():
        ms, label = min(rows)
        default = next(m for m, lab in rows if lab == "defaults")
        lines.append(f"  {name:22s} {label:38s} {ms:.4f} ms (defaults {default:.4f} ms)")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--deadline", type=float, default=60,
                    help="seconds for the whole sweep (no new measurement starts after it)")
    ap.add_argument("--reps", type=int, default=10, help="timed calls per median")
    ap.add_argument("--parts", default="threshold,grid",
                    help="comma list of threshold, grid (default: %(default)s)")
    a = ap.parse_args(argv)
    parts = [p for p in a.parts.split(",") if p]
    if not parts or set(parts) - {"threshold", "grid"}:
        ap.error(f"--parts: expected some of threshold,grid, got {a.parts!r}")
    if a.reps < 1:
        ap.error("--reps: expected a positive integer")
    t_end = time.monotonic() + a.deadline
    if not native.is_available("cuda"):
        print("UNAVAILABLE: the cuda backend is not available here")
        return 3
    cases = calls("cuda")

    def out_of_time():
        return time.monotonic() > t_end

    def timer(s, y, tau, algorithm):
        return time_call(s, y, tau, algorithm, a.reps)

    thresholds, grid = {}, {}
    if "threshold" in parts:
        have = rk.available_algorithms("cuda", "cuda")
        if "bucketed" in have:
            print("== per-row threshold (RSPOSE_CUDA_BUCKET_COST) and both algorithms")
            thresholds = threshold_sweep(cases, timer, out_of_time)
        else:
            print(f"note: the cuda backend has only {have}: no threshold to sweep")
    if "grid" in parts:
        print("\n== launch parameters (pairwise kernels)")
        grid = grid_sweep(cases, timer, out_of_time)
    if out_of_time():
        print(f"deadline of {a.deadline:.0f}s reached; the summary covers what was measured")
    print()
    if "grid" in parts:
        print("\n".join(grid_summary(grid)))
    if thresholds or "threshold" in parts:
        print("\n".join(threshold_summary(thresholds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
