"""Microbenchmark of the Rank & Sort losses (SPEC §8). Minimal first version: forward+backward
time of each available backend on one shape; the full benchmark replaces it."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import rspose_kernels as rk
from rspose_kernels.testing import SHAPES, shape_case


def time_fwd_bwd(shape, backend, regime, repeat, device):
    pred, target, weight = shape_case(shape, regime=regime, device=device)
    fn = rk.simcc_rs_loss if shape == "simcc" else rk.spatial_rs_loss
    if shape == "simcc":
        pred = tuple(p.requires_grad_(True) for p in pred)
    else:
        pred.requires_grad_(True)
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        fn(pred, target, weight, backend=backend).loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])   # the first call warms up


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="vitpose", choices=sorted(SHAPES))
    ap.add_argument("--regime", default="init", choices=["init", "trained"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    for backend in rk.available_backends(args.device):
        t = time_fwd_bwd(args.shape, backend, args.regime, args.repeat, args.device)
        print(f"{args.shape:8s} {args.regime:8s} {backend:8s} fwd+bwd {t * 1e3:9.1f} ms "
              f"({args.device})")


if __name__ == "__main__":
    main()
