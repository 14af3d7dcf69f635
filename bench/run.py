"""Microbenchmark of the Rank & Sort losses (docs/DESIGN.md §8).

For each shape (vitpose, hires, large, simcc) and score regime (init, trained) it times every
provider (bench/providers.py): each backend in ``rk.available_backends(device)`` by its name
(``algorithm="auto"``; the auto row's note says how many rows its cost model made bucketed),
and, for a backend with two algorithms, ``cpu/pairwise``, ``cpu/bucketed``, ... forced; the
baselines ``mse`` (the cost floor users know) and ``rs_loop`` (the public Rank & Sort code's
per-positive loop, extrapolated from a sample). The vectorised torch reference is
``torch/pairwise``.

Modes: ``fwd`` is the loss call on inputs that require grad (the Rank & Sort backends compute
the gradient there), ``bwd`` is ``loss.backward()``, ``full`` the two together, each timed as
its own series (bench/harness/timing.py: ``triton.testing.do_bench`` on a GPU,
``torch.utils.benchmark.Timer`` on the CPU) after untimed warm-up, one call of which measures
peak memory. Reported: median, p20 and p80 in ms, peak memory, pair evaluations per second
(pairs = Σ_rows |P|·L) and the ratio to ``mse``.

Output: a table on stdout, rows appended to bench/results/results.csv (keyed by date, run id,
git commit, device, torch/triton/CUDA versions), a PNG with --plot (bench/plot.py).

    python3 -m bench.run               # every shape and regime, the benchmark shapes
    python3 -m bench.run --quick       # CPU: reduced batches, seconds on 2 cores
    python3 -m bench.run --shapes vitpose --regimes init --providers torch,mse
    python3 -m bench.run --providers cpu/pairwise,cpu/bucketed --cpu-time --calibrate
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import rspose_kernels as rk
from bench import calibrate
from bench.cases import QUICK_SIZES, Case, estimate_pairs, make_case
from bench.harness.cli import doc_parser
from bench.harness.progress import Progress
from bench.harness.provenance import environment, load_avg
from bench.harness.results import (
    RESULTS_CSV,
    RESULTS_DIR,
    TABLE_HEAD,
    add_ratios,
    append_csv,
    format_table,
    table_line,
    timing_rows,
)
from bench.harness.timing import POLICIES, Policy, time_modes, timer_note
from bench.providers import BASELINES, make_provider, providers_for
from rspose_kernels.testing import REGIMES, SHAPES


def bench_case(case: Case, names, device_type: str, policy: Policy, env: dict,
               progress: Progress | None = None, cpu_time: bool = False) -> list[dict]:
    """Times every provider in ``names`` on ``case``.

    Args:
        case: from :func:`bench.cases.make_case`.
        names: provider names (:func:`bench.providers.providers_for`).
        device_type: "cpu" or "cuda".
        policy: warm-up and time budget.
        env: the provenance columns (:func:`bench.harness.provenance.environment`).
        progress: advanced by each provider's pairs.
        cpu_time: CPU only: process CPU time on one thread.

    Returns:
        Result rows, three per provider (the modes), ratio_to_mse filled.
    """
    rows = []
    for name in names:
        prov = make_provider(case, name, device_type, policy)
        if progress:
            progress.update(f"{case.shape}/{case.regime} {name}")
        load = load_avg()
        times, peak = time_modes(prov.fn, prov.leaves, device_type, policy, cpu_time,
                                 prov.scale)
        base = dict(env, shape=case.shape, regime=case.regime, batch=case.batch,
                    keypoints=case.keypoints, rows=case.rows, provider=prov.name, load_avg=load,
                    note=prov.note, pos_thr=case.pos_thr, delta=case.delta)
        rows += timing_rows(base, times, peak, prov.pairs)
        if progress:
            # Weights count the backends only; the baselines' time is absorbed in the rate.
            progress.update(f"{case.shape}/{case.regime} {name} done",
                            weight=0.0 if name in BASELINES else case.pairs)
    add_ratios(rows)
    return rows


def parse_args(argv=None):
    ap = doc_parser(__doc__, csv=False)
    ap.add_argument("--quick", action="store_true",
                    help="shorter timing; on a CPU also reduced sizes (the first b items "
                         "and k keypoints; see the b x k column) and one thread")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    choices=["cpu", "cuda"])
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma list of %(default)s")
    ap.add_argument("--regimes", default=",".join(REGIMES), help="comma list of %(default)s")
    ap.add_argument("--providers", default="",
                    help="comma list (default: mse, every available backend, rs_loop)")
    ap.add_argument("--batch", type=int, help="use the first BATCH items of each shape")
    ap.add_argument("--keypoints", type=int, help="use the first KEYPOINTS keypoints")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--pos-thr", type=float, default=None,
                    help="heatmap τ (default: the package's, rk.HEATMAP_POS_THR; the trained "
                         "regime is trained at it); SimCC shapes keep rk.SIMCC_POS_THR")
    ap.add_argument("--delta", type=float, default=None,
                    help="ramp half-width δ of every Rank & Sort call (default: the package's, "
                         "rk.DEFAULT_DELTA); recorded in the CSV's delta column")
    ap.add_argument("--min-time", type=float,
                    help="seconds of timed runs per provider and mode, at least and at most "
                         "(0: one timed block; default: the policy's)")
    ap.add_argument("--csv", type=Path, default=RESULTS_CSV,
                    help="results file rows are appended to (default: %(default)s)")
    ap.add_argument("--no-save", action="store_true", help="print only, append nothing")
    ap.add_argument("--plot", action="store_true",
                    help="also write a PNG of this run (needs matplotlib)")
    ap.add_argument("--deadline", type=float, default=0,
                    help="seconds after which the remaining cases are skipped (0: none)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--cpu-time", action="store_true",
                    help="CPU: one thread, timed by process CPU time (time.process_time), which "
                         "a loaded machine disturbs far less than wall time; for calibration")
    ap.add_argument("--calibrate", action="store_true",
                    help="then fit the cost model to this run's <backend>/pairwise and "
                         "<backend>/bucketed rows (what `python3 -m bench.calibrate` does "
                         "for a run in the CSV)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device_type = args.device
    if device_type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    shapes = [s for s in args.shapes.split(",") if s]
    regimes = [r for r in args.regimes.split(",") if r]
    for s in shapes:
        if s not in SHAPES:
            raise SystemExit(f"--shapes: unknown shape {s!r}; expected some of {list(SHAPES)}")
    for r in regimes:
        if r not in REGIMES:
            raise SystemExit(f"--regimes: unknown regime {r!r}; expected some of {REGIMES}")
    run_kind = "quick" if args.quick else "full"
    policy = POLICIES[(device_type, run_kind)]
    if args.min_time is not None:
        policy = replace(policy, min_time=args.min_time, max_time=args.min_time)
    if args.batch or args.keypoints:
        run_kind = "custom"
    dtype = getattr(torch, args.dtype)
    if args.cpu_time:
        if device_type != "cpu":
            raise SystemExit("--cpu-time: CPU only")
        torch.set_num_threads(1)
        run_kind = "cputime"
    elif args.quick and device_type == "cpu":
        # The quick sizes are too small for threads to pay, and on a loaded machine every
        # parallel region waits for a descheduled thread: 80 s wall at a load of 4.5 on the
        # 2-core machine with 2 threads, 32 s with one (docs/MEASUREMENTS.md, "quick").
        torch.set_num_threads(1)
    names = providers_for(device_type, [p for p in args.providers.split(",") if p])
    env = environment(device_type, run_kind, dtype)

    def size(shape):
        if args.batch or args.keypoints:
            return args.batch, args.keypoints
        if args.quick and device_type == "cpu":
            return QUICK_SIZES[shape]
        return None, None

    print(f"# {env['device']} | torch {env['torch']} | triton {env['triton'] or '-'}"
          f"{' | CUDA ' + env['cuda'] if device_type == 'cuda' else ''} | "
          f"{env['threads']} threads | commit {env['commit']} | {env['date']} | run {run_kind} | "
          f"load avg {load_avg()}")
    print(f"# providers: {', '.join(names)}  (backends available on {device_type}: "
          f"{', '.join(rk.available_backends(device_type)) or 'none'})")
    if args.quick or args.batch or args.keypoints:
        print("# reduced sizes: the b x k column is the batch and keypoints used (benchmark "
              "shapes: " + ", ".join(f"{s} {SHAPES[s][0]}x{SHAPES[s][1]}" for s in shapes) + ")")
    print(table_line(TABLE_HEAD), flush=True)

    n_rs = sum(1 for n in names if n not in BASELINES)
    plan = [(s, r) for s in shapes for r in regimes]
    progress = Progress(sum(estimate_pairs(s, *size(s)) * n_rs for s, r in plan),
                        enabled=not args.no_progress)
    t_start = time.perf_counter()
    all_rows, skipped = [], []
    for shape, regime in plan:
        if args.deadline and time.perf_counter() - t_start > args.deadline:
            skipped.append(f"{shape}/{regime}")
            continue
        case = make_case(shape, regime, *size(shape), device=device_type, dtype=dtype,
                         pos_thr=args.pos_thr, delta=args.delta)
        # The estimate becomes the real pair count for this case's share of the bar.
        progress.total += (case.pairs - estimate_pairs(shape, *size(shape))) * n_rs
        rows = bench_case(case, names, device_type, policy, env, progress, args.cpu_time)
        if not args.no_save:
            append_csv(args.csv, rows)
        progress.clear_line()
        print(format_table(rows, header=False), flush=True)
        all_rows += rows
        del case
        if device_type == "cuda":
            torch.cuda.empty_cache()
    progress.close()
    wall = time.perf_counter() - t_start

    cuda = device_type == "cuda"
    print("# fwd: the loss call on inputs requiring grad (the Rank & Sort backends compute the "
          "gradient there); bwd: loss.backward();\n# Gpair/s and x mse use fwd+bwd; timer: "
          + timer_note(device_type, args.cpu_time)
          + "; peak: " + ("max_memory_allocated above the inputs" if cuda
                          else "live torch CPU allocations (profiler memory events)") + ".")
    if args.calibrate:
        print("\n".join(calibrate.report(all_rows) or ["# calibrate: no <backend>/pairwise "
                                                      "and <backend>/bucketed rows to fit"]))
    if skipped:
        print(f"# deadline ({args.deadline:.0f} s) reached: skipped {', '.join(skipped)}")
    saved = "" if args.no_save else f"; rows appended to {args.csv}"
    print(f"# {len(plan) - len(skipped)} cases in {wall:.1f} s, load avg {load_avg()}{saved}")
    if args.plot and all_rows:
        try:
            from bench import plot
            path = plot.plot_rows(all_rows, RESULTS_DIR)
            print(f"# plot: {path}")
        except ImportError as exc:
            print(f"# --plot skipped: {exc}. Install matplotlib, then "
                  f"`python3 -m bench.plot` plots the latest run from {args.csv}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
