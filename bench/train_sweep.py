"""The sweep that sets the pose-level defaults (README, "Choosing τ, δ and the learning rate").

Trains on bench/train.py's task (its data, models, schedule and evaluator), every variant
of a seed in lockstep from the same initial weights and batches, and reports each variant's
AP (mean ± sd over seeds) and its AP paired against the baseline loss of its mode (MSE for
heatmaps, KL for SimCC) — both at the same learning rate and against the baseline at *its*
best learning rate — so that every loss is compared at its own best learning rate.

Stages (``--stage``), each appending its rows (``run`` = ``sweep-<stage>``) to
bench/results/train.csv:

- ``lr``: heatmap τ ∈ TAUS and SimCC τ ∈ SIMCC_TAUS, each over LRS, beside MSE and KL over
  LRS (δ 0.5, λ 1);
- ``ablate``: at the heatmap τ and learning rate given (``--tau``, ``--lr``, default: the
  package's defaults and bench/train.py's best): δ ∈ {0.25, 1}, λ ∈ {0, 0.5, 2}, and the
  ranking over each keypoint type of the batch instead of each heatmap;
- ``confirm``: the package's defaults and the baselines at their best learning rates for
  1200 steps;
- ``large``: the same at 96 × 128 crops (48 × 64 heatmaps, σ 2; SimCC σ 3 bins), 300 steps.

Jobs (a seed and a group of variants) run in ``--jobs`` processes of one thread each; the
final weights of every variant go to ``--checkpoints`` (for bench/train_protocols.py).

    python3 -m bench.train_sweep --stage lr            # ~25 min on the idle 2-core machine
    python3 -m bench.train_sweep --summary lr          # the table again, from the CSV
    python3 -m bench.train_sweep --stage lr --quick    # a smoke run (~2 min)
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import torch

import rspose_kernels as rk
from bench.harness.provenance import environment, package_version
from bench.harness.results import append_csv
from bench.train import BEST_LR, BUDGETS, FIELDS, RESULTS, train_seed, variant
from bench.train_data import DataConfig, validation_set
from bench.train_eval import as_number, coco_ground_truth, mean_sd

HERE = Path(__file__).resolve().parent

LRS = (2e-3, 5e-3, 1e-2, 2e-2)
TAUS = (0.0, 0.1, 0.3, 0.5, 0.7)
# SimCC labels are rescaled to peak 1 first; exp(-4.5) is "within 3σ" (the old default).
SIMCC_TAUS = (round(math.exp(-4.5), 6), 0.1, 0.3, 0.5, 0.9)
BASELINE = {"heatmap": "mse", "simcc": "kl"}
LARGE = DataConfig(width=96, height=128, heatmap_sigma=2.0, simcc_sigma=3.0)
DEFAULT_CKPT = HERE / "results" / "checkpoints"
STAGES = ("lr", "ablate", "confirm", "large")


def stage_variants(stage: str, tau: float | None = None, lr: float | None = None):
    """[(mode, [Variant, ...])]: the variants of a stage, grouped by model kind."""
    hm, sc = rk.HEATMAP_POS_THR, rk.SIMCC_POS_THR
    if stage == "lr":
        heat = [variant("mse", r) for r in LRS]
        heat += [variant("rspose", r, pos_thr=t) for t in TAUS for r in LRS]
        simcc = [variant("kl", r) for r in LRS]
        simcc += [variant("rspose_simcc", r, pos_thr=t) for t in SIMCC_TAUS for r in LRS]
        return [("heatmap", heat), ("simcc", simcc)]
    if stage == "ablate":
        t = hm if tau is None else tau
        r = BEST_LR["rspose"] if lr is None else lr
        heat = [variant("mse", BEST_LR["mse"]), variant("rspose", r, pos_thr=t)]
        heat += [variant("rspose", r, pos_thr=t, delta=d) for d in (0.25, 1.0)]
        heat += [variant("rspose", r, pos_thr=t, instance_weight=w) for w in (0.0, 0.5, 2.0)]
        heat += [variant("rspose", r, pos_thr=t, scope="keypoint")]
        return [("heatmap", heat)]
    if stage in ("confirm", "large"):
        heat = [variant("mse", BEST_LR["mse"]), variant("rspose", BEST_LR["rspose"], pos_thr=hm),
                variant("rspose", BEST_LR["rspose_tau0"], pos_thr=0.0)]
        simcc = [variant("kl", BEST_LR["kl"]),
                 variant("rspose_simcc", BEST_LR["rspose_simcc"], pos_thr=sc)]
        return [("heatmap", list(dict.fromkeys(heat))), ("simcc", simcc)]
    raise ValueError(f"stage: expected lr, ablate, confirm or large, got {stage!r}")


def stage_budget(stage: str, quick: bool):
    b = BUDGETS[("cpu", "full")]
    b = replace(b, evals=1)
    if stage == "confirm":
        b = replace(b, steps=1200)
    if quick:
        b = replace(b, seeds=(0,), steps=20, batch=8, val_size=64, warmup=4)
    return b


def _job(stage, seed, variants, budget, cfg, checkpoints, run_kind):
    """One pool job: a seed's variants in lockstep, in a fresh process of one thread."""
    torch.set_num_threads(1)
    env = environment("cpu", run_kind, torch.float32)
    env.update(rspose_kernels=rk.__version__, pycocotools=package_version("pycocotools"),
               threads=torch.get_num_threads())
    val = validation_set(budget.val_size, cfg)
    gt = coco_ground_truth(val["keypoints"], val["visible"], val["box"], val["area"])
    t0 = time.perf_counter()
    rows = train_seed(seed, variants, budget, cfg, torch.device("cpu"), val, gt, env,
                      checkpoints=None if checkpoints is None else Path(checkpoints) / stage)
    return rows, time.perf_counter() - t0


def _groups(variants, size):
    return [variants[i:i + size] for i in range(0, len(variants), size)]


def run_stages(stages, *, tau=None, lr=None, jobs=2, quick=False, checkpoints=DEFAULT_CKPT,
               csv_path=RESULTS, group_size=12):
    """Runs the stages' jobs in one pool of ``jobs`` processes (longest jobs first, so the
    pool stays full); returns {stage: rows}. Rows are appended as each job finishes."""
    work = []
    for stage in stages:
        budget = stage_budget(stage, quick)
        cfg = LARGE if stage == "large" else DataConfig()
        run_kind = f"sweep-{stage}" + ("-quick" if quick else "")
        n = sum(len(vs) for _, vs in stage_variants(stage, tau, lr))
        print(f"# train_sweep {stage}: {n} variants × {len(budget.seeds)} seeds, "
              f"{budget.steps} steps × batch {budget.batch}, input {cfg.input_label}",
              flush=True)
        for mode, vs in stage_variants(stage, tau, lr):
            for seed in budget.seeds:
                for group in _groups(vs, group_size):
                    cost = budget.steps * (len(group) + 2) * cfg.width * cfg.height
                    work.append((cost, stage, seed, group, budget, cfg, run_kind))
    work.sort(key=lambda w: -w[0])
    print(f"# {len(work)} jobs in {jobs} processes of 1 thread", flush=True)
    from tqdm import tqdm
    rows = {stage: [] for stage in stages}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(work), desc="jobs", unit="job", file=sys.stderr) as bar:
        futures = {pool.submit(_job, stage, seed, group, budget, cfg, checkpoints, kind): stage
                   for _, stage, seed, group, budget, cfg, kind in work}
        for fut in as_completed(futures):
            part, secs = fut.result()
            rows[futures[fut]] += part
            bar.update(1)
            bar.set_postfix_str(f"{futures[fut]}: last job {secs:.0f} s")
            if csv_path is not None:
                append_csv(csv_path, part, FIELDS)   # a killed sweep keeps its finished jobs
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return rows


# ----------------------------------------------------------------------------- summary

def _paired(rows_a, rows_b, metric="AP"):
    """Per-seed differences a − b (seeds both have)."""
    a = {r["seed"]: as_number(r[metric]) for r in rows_a}
    b = {r["seed"]: as_number(r[metric]) for r in rows_b}
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def read_rows(csv_path=RESULTS, run: str | None = None, decoder="mmpose", protocol="gt"):
    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if (run is None or r["run"] == run)]
    rows = [r for r in rows if r.get("decoder", "mmpose") in (decoder, "")
            and r.get("protocol", "gt") in (protocol, "")]
    # the latest run of each (variant, seed, input) wins
    latest = {}
    for r in rows:
        latest[(r["variant"], r["seed"], r["input"], r["steps"])] = r
    return list(latest.values())


def summary(rows, metric="AP") -> str:
    """Markdown: one line per variant — metric mean ± sd, PCK, ρ kpt, paired Δ against the
    mode's baseline at the same learning rate and at the baseline's best learning rate."""
    by_variant = defaultdict(list)
    for r in rows:
        by_variant[r["variant"]].append(r)
    mean = {k: statistics.fmean(as_number(r[metric]) for r in v) for k, v in by_variant.items()}
    best_base = {}
    for k, v in by_variant.items():
        loss, mode = v[0]["loss"], v[0]["mode"]
        if loss == BASELINE[mode] and (mode not in best_base or mean[k] > mean[best_base[mode]]):
            best_base[mode] = k
    head = ("variant", "mode", "lr", "seeds", metric, "PCK@0.05", "ρ kpt", "ms/step",
            f"Δ{metric} vs baseline, same lr", f"Δ{metric} vs best baseline")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(by_variant, key=lambda k: (by_variant[k][0]["mode"],
                                              by_variant[k][0]["loss"] != BASELINE[
                                                  by_variant[k][0]["mode"]],
                                              by_variant[k][0]["loss"], k))
    for k in order:
        rs = by_variant[k]
        mode, lr = rs[0]["mode"], rs[0]["lr"]
        base_same = [v for kk, v in by_variant.items() if v[0]["mode"] == mode
                     and v[0]["loss"] == BASELINE[mode] and v[0]["lr"] == lr]
        d_same = _paired(rs, base_same[0], metric) if base_same and rs[0]["loss"] != BASELINE[
            mode] else []
        d_best = _paired(rs, by_variant[best_base[mode]], metric) if mode in best_base \
            and k != best_base[mode] else []
        lines.append("| " + " | ".join([
            k, mode, f"{as_number(lr):g}", str(len(rs)),
            mean_sd([as_number(r[metric]) for r in rs]),
            mean_sd([as_number(r["PCK"]) for r in rs]),
            mean_sd([as_number(r["rho_kpt"]) for r in rs], 2),
            mean_sd([as_number(r["ms_step"]) for r in rs], 0),
            mean_sd(d_same) if d_same else "—", mean_sd(d_best) if d_best else "—"]) + " |")
    return "\n".join(lines)


def grid(rows, metric="AP") -> str:
    """Markdown: one line per variant without its learning rate, the metric (mean ± sd over
    seeds) at each learning rate, and at the variant's best learning rate the paired Δ
    against the mode's baseline at *its* best learning rate."""
    by_variant = defaultdict(list)
    for r in rows:
        by_variant[r["variant"]].append(r)
    lrs = sorted({as_number(r["lr"]) for r in rows})
    family = defaultdict(dict)             # variant without lr -> lr -> rows
    for k, rs in by_variant.items():
        family[k.rsplit("@", 1)[0]][as_number(rs[0]["lr"])] = rs

    def mean(rs):
        return statistics.fmean(as_number(r[metric]) for r in rs)

    best = {}                              # mode -> the baseline's best rows
    for name, per_lr in family.items():
        r0 = next(iter(per_lr.values()))[0]
        if r0["loss"] == BASELINE[r0["mode"]]:
            best[r0["mode"]] = max(per_lr.values(), key=mean)
    head = ["variant", "mode"] + [f"lr {lr:g}" for lr in lrs] + [
        "best lr", f"Δ{metric} vs best baseline (paired)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, per_lr in family.items():
        r0 = next(iter(per_lr.values()))[0]
        top_lr = max(per_lr, key=lambda lr: mean(per_lr[lr]))
        cells = [name, r0["mode"]]
        for lr in lrs:
            rs = per_lr.get(lr)
            text = mean_sd([as_number(r[metric]) for r in rs]) if rs else "—"
            cells.append(f"**{text}**" if lr == top_lr else text)
        base = best.get(r0["mode"])
        d = _paired(per_lr[top_lr], base, metric) if base and r0["loss"] != BASELINE[
            r0["mode"]] else []
        cells += [f"{top_lr:g}", mean_sd(d) if d else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--stage", help="comma list of lr, ablate, confirm, large (one pool)")
    ap.add_argument("--summary", metavar="STAGE", help="print a stage's table from the CSV")
    ap.add_argument("--grid", action="store_true",
                    help="--summary as a variant × learning-rate grid")
    ap.add_argument("--tau", type=float, help="ablate: the heatmap τ (default: the package's)")
    ap.add_argument("--lr", type=float, help="ablate: RSPoseLoss's learning rate")
    ap.add_argument("--jobs", type=int, default=2, help="processes (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, 20 steps")
    ap.add_argument("--csv", type=Path, default=RESULTS)
    ap.add_argument("--checkpoints", type=Path, default=DEFAULT_CKPT)
    ap.add_argument("--decoder", default="mmpose", help="--summary: the decoder's rows")
    ap.add_argument("--protocol", default="gt", help="--summary: the protocol's rows")
    args = ap.parse_args(argv)
    if args.stage is None and args.summary is None:
        ap.error("give --stage or --summary")
    if args.stage:
        stages = args.stage.split(",")
        bad = [s for s in stages if s not in STAGES]
        if bad:
            ap.error(f"--stage: unknown {bad}; expected some of {list(STAGES)}")
        rows = run_stages(stages, tau=args.tau, lr=args.lr, jobs=args.jobs,
                          quick=args.quick, checkpoints=args.checkpoints, csv_path=args.csv)
        for stage, part in rows.items():
            print(f"\n## {stage}\n")
            print(summary(part))
    if args.summary:
        run = f"sweep-{args.summary}"
        rows = read_rows(args.csv, run, args.decoder, args.protocol)
        print(grid(rows) if args.grid else summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
