"""Sweep the CUDA backend's launch parameters on a GPU (what bench/gpu_check.sh's `sweep` runs).

The CUDA kernels' grid sizes and pass-B row splitting are host choices that only a GPU
measurement can settle (csrc/cuda/rank_sort_cuda.h, CudaTuning); native.py reads them from
RSPOSE_CUDA_CTAS_PER_SM, RSPOSE_CUDA_WARP_ITEMS_PER_SM and RSPOSE_CUDA_MAX_SPLIT at each call.
This times the backend's forward + gradient (one ``rank_sort_rows`` call, float32) at the SPEC
shapes for each setting and prints one line per (setting, call) with the median in ms; the
fastest setting per call is marked. bench/run.py keeps measuring the defaults.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rspose_kernels.backends import native  # noqa: E402
from rspose_kernels.testing import SHAPES, shape_case  # noqa: E402

GRID = {   # env var -> values tried (one at a time, the others at their default)
    "RSPOSE_CUDA_CTAS_PER_SM": (2, 4, 8, 16),
    "RSPOSE_CUDA_WARP_ITEMS_PER_SM": (8, 16, 64),
    "RSPOSE_CUDA_MAX_SPLIT": (8, 32, 128),
}


def calls(device):
    """(name, scores [M, L], labels [M, L], pos_thr) at the SPEC shapes, both regimes."""
    out = []
    for regime in ("init", "trained"):
        for name in SHAPES:
            s, t, _ = shape_case(name, regime=regime, device=device)
            if name == "simcc":
                for ax, sx, tx in zip("xy", s, t):
                    out.append((f"{name}-{ax} {regime}", sx.flatten(0, 1), tx.flatten(0, 1),
                                math.exp(-4.5)))
            else:
                out.append((f"{name} {regime}", s.flatten(2).flatten(0, 1),
                            t.flatten(2).flatten(0, 1), 0.0))
    b, k = SHAPES["vitpose"][:2]       # Instance-Sort: one row of B·K items
    g = torch.Generator().manual_seed(0)
    out.append(("vitpose-instance", torch.randn(1, b * k, generator=g).to(device),
                (torch.rand(1, b * k, generator=g) * 0.999 + 0.001).to(device), 0.0))
    return out


def time_call(s, y, tau, reps=10):
    times = []
    for i in range(reps + 2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        native.rank_sort_rows(s, y, 0.5, tau, False, True)
        end.record()
        end.synchronize()
        if i >= 2:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deadline", type=float, default=60, help="seconds for the whole sweep")
    a = ap.parse_args(argv)
    t_end = time.monotonic() + a.deadline
    if not native.is_available("cuda"):
        print("UNAVAILABLE: the cuda backend is not available here")
        return 3
    cases = calls("cuda")
    settings = [("defaults", None, None)] + [(f"{var}={v}", var, v) for var, vals in GRID.items()
                                             for v in vals]
    best = {}
    print(f"{'setting':38s} {'call':22s} {'median ms':>10s}")
    for label, var, value in settings:
        if var is not None:
            os.environ[var] = str(value)
        try:
            for name, s, y, tau in cases:
                if time.monotonic() > t_end:
                    print(f"deadline of {a.deadline:.0f}s reached; the rest not measured")
                    return 0
                if var == "RSPOSE_CUDA_MAX_SPLIT" and "instance" not in name:
                    continue   # splitting only ever happens for few rows
                ms = time_call(s, y, tau)
                best.setdefault(name, []).append((ms, label))
                print(f"{label:38s} {name:22s} {ms:10.4f}", flush=True)
        finally:
            if var is not None:
                del os.environ[var]
    print("\nfastest per call:")
    for name, rows in best.items():
        ms, label = min(rows)
        default = next(m for m, lab in rows if lab == "defaults")
        print(f"  {name:22s} {label:38s} {ms:.4f} ms (defaults {default:.4f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
