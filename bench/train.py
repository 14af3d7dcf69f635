"""Does it train? MSE / KL against RSPose on a seeded synthetic pose task (docs/DESIGN.md §11).

Trains the same small top-down network (bench/train_models.py) with every loss of
bench/train_losses.py — heatmap: MSE (mmpose KeypointMSELoss), ``rk.spatial_rs_loss`` alone,
``rk.RSPoseLoss``; SimCC: KL (mmpose KLDiscretLoss), ``rk.RSPoseLoss(mode="simcc")`` — on the
procedural data of bench/train_data.py, and scores the validation set with the real COCO
keypoint evaluator (bench/train_eval.py). Per seed, every loss starts from the same weights
(one init per model kind), sees the same batches in the same order (the losses train in
lockstep, one batch at a time, so a loaded machine slows them alike) under the same
optimiser, schedule and step budget.

Reported per loss, mean ± sd over the seeds, at the last step: AP, AP50, AP75, PCK@0.05,
the Spearman correlation of keypoint confidence with keypoint OKS (ρ kpt) and of instance
score with instance OKS (ρ inst), the median wall time of a training step (forward, loss,
backward, optimiser; data generation excluded) and the share of it spent in the loss
(forward + backward of the loss alone, timed on the detached network output).

Output: a Markdown table on stdout, rows (every evaluation point of every seed and loss)
appended to bench/results/train.csv with device, versions, commit and seed, a PNG of AP
and the correlations against steps with --plot (default path docs/train.png).

    python3 -m bench.train --quick            # ~2 min on the 2-core CPU machine
    python3 -m bench.train                    # the full run (CPU ~15 min; GPU: more steps)
    python3 -m bench.train --device cuda --plot
    python3 -m bench.train --losses mse,rspose --seeds 0,1 --steps 200

On a CPU shared with other jobs, ``--threads 1`` is much faster than torch's default of one
thread per core (docs/MEASUREMENTS.md, "Training threads under load").
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import rspose_kernels as rk
from bench.harness.provenance import environment, load_avg, package_version
from bench.harness.results import append_csv
from bench.train_data import DataConfig, heatmap_targets, make_batch, simcc_targets, validation_set
from bench.train_eval import DECODERS, best_decoder, coco_ground_truth, decode, evaluate, mean_sd
from bench.train_losses import LOSSES, LossSpec
from bench.train_losses import build as build_loss
from bench.train_models import build_model
from rspose_kernels.dispatch import resolve_backend

HERE = Path(__file__).resolve().parent

RESULTS = HERE / "results" / "train.csv"
DEFAULT_PLOT = HERE.parent / "docs" / "train.png"
METRICS = ("AP", "AP50", "AP75", "PCK", "rho_kpt", "rho_inst")
FIELDS = ("date", "run_id", "run", "commit", "device", "device_type", "threads", "torch",
          "triton", "cuda", "rspose_kernels", "pycocotools", "seed", "loss", "variant",
          "pos_thr", "delta", "instance_weight", "scope", "mode", "step", "steps", "batch", "lr",
          "width", "input", "val_size", "decoder", "protocol", "AP", "AP50", "AP75", "PCK",
          "rho_kpt", "rho_inst", "OKS", "train_loss", "ms_step", "ms_loss", "loss_share",
          "load_avg", "elapsed_s")


@dataclass(frozen=True)
class Budget:
    seeds: tuple
    steps: int
    batch: int
    val_size: int
    evals: int          # evaluation points, evenly spaced, the last at the last step
    width: int = 16
    lr: float = 2e-3
    warmup: int = 50


# Sized for the 2-core CPU machine (quick ≤ 2 min, full ≤ 15 min, measured under load) and
# for one GPU, where the budget goes into steps and batch.
BUDGETS = {
    ("cpu", "quick"): Budget(seeds=(0, 1), steps=80, batch=16, val_size=128, evals=2,
                             warmup=10),
    ("cpu", "full"): Budget(seeds=(0, 1, 2), steps=300, batch=32, val_size=512, evals=3,
                            warmup=30),
    ("cuda", "quick"): Budget(seeds=(0, 1), steps=300, batch=64, val_size=512, evals=3,
                              width=32),
    ("cuda", "full"): Budget(seeds=(0, 1, 2, 3, 4), steps=4000, batch=64, val_size=2048,
                             evals=8, width=32, lr=1e-3, warmup=200),
}


# Each loss's best learning rate on this task, from bench/train_sweep.py --stage lr (README,
# "Choosing τ, δ and the learning rate"): the default run trains each loss at its own.
# rspose_tau0: RSPoseLoss at τ = 0 (the old default), for comparison. spatial_rs: not swept,
# RSPoseLoss's. (docs/MEASUREMENTS.md, "Best learning rates".)
BEST_LR = {"mse": 2e-2, "spatial_rs": 2e-2, "rspose": 2e-2, "rspose_tau0": 2e-2, "kl": 1e-2,
           "rspose_simcc": 5e-3}


# ----------------------------------------------------------------------------- training

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)   # timing only: each phase is timed to its end


def _detached(output):
    if isinstance(output, tuple):
        return tuple(o.detach().requires_grad_(True) for o in output)
    return output.detach().requires_grad_(True)


def lr_lambda(budget: Budget):
    """Linear warm-up, then cosine decay to 0 at the last step."""
    def f(step):
        if step < budget.warmup:
            return (step + 1) / budget.warmup
        t = (step - budget.warmup) / max(1, budget.steps - budget.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return f


@dataclass
class Trainer:
    """One loss's model, optimiser and running record."""
    spec: LossSpec
    model: torch.nn.Module
    budget: Budget
    device: torch.device
    lr: float | None = None      # None: the budget's
    losses: list = field(default_factory=list)
    step_ms: list = field(default_factory=list)
    loss_ms: list = field(default_factory=list)

    def __post_init__(self):
        self.model.to(self.device).train()
        if self.lr is None:
            self.lr = self.budget.lr
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(self.budget))

    def step(self, images, target, target_weight) -> float:
        """One training step. The loss runs on a detached copy of the network output so
        that its forward + backward can be timed alone; the network then back-propagates
        the gradient it returned (the same gradient as one backward through both)."""
        dev = self.device
        _sync(dev)
        t0 = time.perf_counter()
        output = self.model(images)
        _sync(dev)
        t1 = time.perf_counter()
        leaf = _detached(output)
        loss = self.spec.fn(leaf, target, target_weight)
        loss.backward()
        _sync(dev)
        t2 = time.perf_counter()
        if isinstance(output, tuple):
            torch.autograd.backward(output, [x.grad for x in leaf])
        else:
            output.backward(leaf.grad)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        _sync(dev)
        t3 = time.perf_counter()
        value = float(loss.detach())
        self.losses.append(value)
        self.step_ms.append((t3 - t0) * 1e3)
        self.loss_ms.append((t2 - t1) * 1e3)
        return value

    def predict(self, images, cfg: DataConfig, decoders=("mmpose",)) -> dict:
        return predict_all(self.model, self.spec.mode, images, cfg, decoders, self.device)


def predict(model, mode: str, images, cfg: DataConfig, decoder: str = "mmpose",
            device=torch.device("cpu"), chunk: int = 256):
    """Decoded keypoints [N, K, 2] and confidences [N, K] (CPU), in eval mode, by
    ``decoder`` (train_eval.DECODERS)."""
    return predict_all(model, mode, images, cfg, (decoder,), device, chunk)[decoder]


@torch.no_grad()
def predict_all(model, mode: str, images, cfg: DataConfig, decoders, device=torch.device("cpu"),
                chunk: int = 256) -> dict:
    """{decoder: (keypoints [N, K, 2], confidences [N, K])} from one forward pass per chunk
    (eval mode), each decoder reading the same outputs."""
    was_training = model.training
    model.eval()
    parts = {d: ([], []) for d in decoders}
    for i in range(0, images.shape[0], chunk):
        out = model(images[i:i + chunk].to(device))
        out = out.float() if mode == "heatmap" else tuple(o.float() for o in out)
        for d, (pts, conf) in parts.items():
            p, c = decode(out, mode, cfg, d)
            pts.append(p.cpu())
            conf.append(c.cpu())
    model.train(was_training)
    return {d: (torch.cat(pts), torch.cat(conf)) for d, (pts, conf) in parts.items()}


def targets_for(batch: dict, cfg: DataConfig) -> dict:
    """mode -> (target, target_weight) for one batch."""
    return {"heatmap": heatmap_targets(batch["keypoints"], batch["visible"], cfg),
            "simcc": simcc_targets(batch["keypoints"], batch["visible"], cfg)}


def eval_steps(budget: Budget) -> list[int]:
    n = max(1, budget.evals)
    return sorted({max(1, round(budget.steps * (i + 1) / n)) for i in range(n)})


def _median_after_warmup(values):
    # the first steps pay one-off costs (allocator, kernel selection); skip up to 10%
    skip = min(len(values) // 10, 20)
    return statistics.median(values[skip:]) if values else math.nan


@dataclass(frozen=True)
class Variant:
    """One trained configuration: a loss (``train_losses.build(loss, **opts)``) at a
    learning rate. ``key`` names it in rows and checkpoints."""
    loss: str
    lr: float
    opts: tuple = ()             # sorted (option, value) pairs

    @property
    def key(self) -> str:
        o = ",".join(f"{k}={v}" for k, v in self.opts)
        return f"{self.loss}[{o}]@{self.lr:g}" if o else f"{self.loss}@{self.lr:g}"

    def spec(self) -> LossSpec:
        return build_loss(self.loss, **dict(self.opts))

    def columns(self) -> dict:
        """The variant's CSV columns: its options, blank where it has the default."""
        o = dict(self.opts)
        return {"variant": self.key, "pos_thr": o.get("pos_thr", ""),
                "delta": o.get("delta", ""), "instance_weight": o.get("instance_weight", ""),
                "scope": o.get("scope", "")}


def variant(loss: str, lr: float, **opts) -> Variant:
    return Variant(loss, float(lr), tuple(sorted(opts.items())))


def train_seed(seed: int, variants, budget: Budget, cfg: DataConfig, device: torch.device,
               val: dict, gt: dict, env: dict, progress=None, checkpoints: Path | None = None,
               decoders=("mmpose",)) -> list[dict]:
    """Trains every variant (a ``Variant``, or a loss name at the budget's learning rate) for
    one seed, in lockstep; rows at each evaluation step, one per decoder. With
    ``checkpoints``, each variant's final weights are saved there as ``<seed>/<key>.pt``."""
    variants = [v if isinstance(v, Variant) else variant(v, budget.lr) for v in variants]
    inits = {}
    trainers = {}
    for v in variants:
        spec = v.spec()
        if spec.mode not in inits:   # one init per model kind: every loss starts equal
            inits[spec.mode] = build_model(spec.mode, width=budget.width, seed=seed, cfg=cfg)
        model = build_model(spec.mode, width=budget.width, seed=seed, cfg=cfg)
        model.load_state_dict(inits[spec.mode].state_dict())
        trainers[v] = Trainer(spec, model, budget, device, lr=v.lr)
    marks = set(eval_steps(budget))
    rows = []
    t_start = time.perf_counter()
    for step in range(budget.steps):
        batch = make_batch(seed, step, budget.batch, cfg, device=device)
        targets = targets_for(batch, cfg)
        for tr in trainers.values():
            target, weight = targets[tr.spec.mode]
            tr.step(batch["images"], target, weight)
        if progress is not None:
            progress.update(1)
            if len(trainers) <= 6:
                progress.set_postfix({v.key: f"{t.losses[-1]:.3g}" for v, t in trainers.items()},
                                     refresh=False)
        if step + 1 not in marks:
            continue
        for v, tr in trainers.items():
            ms_step = _median_after_warmup(tr.step_ms)
            ms_loss = _median_after_warmup(tr.loss_ms)
            recent = tr.losses[-max(1, len(tr.losses) // 10):]
            for decoder, (pred, conf) in tr.predict(val["images"], cfg, decoders).items():
                metrics = evaluate(pred, conf, gt, val)
                rows.append(dict(env, **v.columns(), seed=seed, loss=v.loss, mode=tr.spec.mode,
                                 step=step + 1, steps=budget.steps, batch=budget.batch,
                                 lr=v.lr, width=budget.width, input=cfg.input_label,
                                 val_size=val["images"].shape[0], decoder=decoder,
                                 protocol="gt", train_loss=statistics.fmean(recent),
                                 ms_step=ms_step, ms_loss=ms_loss,
                                 loss_share=ms_loss / ms_step, load_avg=load_avg(),
                                 elapsed_s=round(time.perf_counter() - t_start, 1), **metrics))
    if checkpoints is not None:
        folder = Path(checkpoints) / str(seed)
        folder.mkdir(parents=True, exist_ok=True)
        for v, tr in trainers.items():
            torch.save(tr.model.state_dict(), folder / f"{v.key}.pt")
    return rows


# ----------------------------------------------------------------------------- output

def summary_table(rows: list[dict]) -> str:
    """Markdown: one line per variant at its last step, mean ± sd over seeds — decoded by
    mmpose's stock rule and by the decoder made for the loss (train_eval.best_decoder)."""
    last = max(r["step"] for r in rows)
    final = [r for r in rows if r["step"] == last]
    keys = list(dict.fromkeys(r["variant"] for r in final))
    seeds = sorted({r["seed"] for r in final})
    head = ("loss", "mode", "lr", "decoder", "AP", "AP50", "AP75", "PCK@0.05",
            "ρ kpt conf–OKS", "ρ inst score–OKS", "ms/step", "loss share")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        first = next(r for r in final if r["variant"] == key)
        for decoder in dict.fromkeys(("mmpose", best_decoder(first["loss"]))):
            rs = [r for r in final if r["variant"] == key and r["decoder"] == decoder]
            if not rs:
                continue
            cells = [LOSSES[first["loss"]].label, first["mode"], f"{first['lr']:g}", decoder]
            cells += [mean_sd([r[m] for r in rs], 3) for m in METRICS]
            cells.append(mean_sd([r["ms_step"] for r in rs], 0))
            cells.append(mean_sd([100 * r["loss_share"] for r in rs], 0) + " %")
            lines.append("| " + " | ".join(cells) + " |")
    r0 = final[0]
    lines.append(f"\n{last} steps × batch {r0['batch']}, seeds {seeds} (± = sd over seeds), "
                 f"{r0['val_size']} validation samples; {r0['device']}, {r0['threads']} "
                 f"threads, torch {r0['torch']}, load average {r0['load_avg']} at the end.")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    """AP, ρ kpt and ρ inst against steps, one line per loss (mean over seeds, min–max band)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib (pip install matplotlib)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if r.get("decoder", "mmpose") == best_decoder(r["loss"])]
    names = list(dict.fromkeys(r["loss"] for r in rows))
    panels = (("AP", "COCO keypoint AP"), ("rho_kpt", "Spearman ρ: keypoint conf vs OKS"),
              ("rho_inst", "Spearman ρ: instance score vs OKS"))
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.2))
    for ax, (metric, title) in zip(axes, panels):
        for name in names:
            steps = sorted({r["step"] for r in rows if r["loss"] == name})
            vals = [[r[metric] for r in rows if r["loss"] == name and r["step"] == s]
                    for s in steps]
            mean = [statistics.fmean(v) for v in vals]
            style = "--" if LOSSES[name].mode == "simcc" else "-"
            line, = ax.plot(steps, mean, style, marker="o", ms=3, label=LOSSES[name].label)
            if all(len(v) > 1 for v in vals):
                ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals],
                                color=line.get_color(), alpha=0.15)
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    r0 = rows[0]
    fig.suptitle(f"bench/train.py ({r0['run']}): {r0['device']}, seeds "
                 f"{sorted({r['seed'] for r in rows})} (band: min–max)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- driver

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true", help="a short run (~2 min on a 2-core CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    choices=["cpu", "cuda"])
    ap.add_argument("--losses", default=",".join(LOSSES),
                    help="comma list of %(default)s")
    ap.add_argument("--seeds", help="comma list of integers (default: the budget's)")
    ap.add_argument("--steps", type=int, help="training steps (default: the budget's)")
    ap.add_argument("--batch", type=int, help="batch size (default: the budget's)")
    ap.add_argument("--val-size", type=int, help="validation samples (default: the budget's)")
    ap.add_argument("--evals", type=int, help="evaluation points (default: the budget's)")
    ap.add_argument("--lr", type=float,
                    help="one learning rate for every loss (default: each loss's BEST_LR)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--csv", type=Path, default=RESULTS,
                    help="results file rows are appended to (default: %(default)s)")
    ap.add_argument("--no-csv", action="store_true", help="do not write the CSV")
    ap.add_argument("--plot", nargs="?", type=Path, const=DEFAULT_PLOT, default=None,
                    metavar="PNG", help="write the plot (default path: docs/train.png)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    unknown = [n for n in args.losses.split(",") if n not in LOSSES]
    if unknown:
        ap.error(f"--losses: unknown {unknown}; expected some of {list(LOSSES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available here")
    return args


def budget_from(args) -> Budget:
    b = BUDGETS[(args.device, "quick" if args.quick else "full")]
    over = {}
    if args.seeds:
        over["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    for key in ("steps", "batch", "val_size", "evals"):
        if getattr(args, key) is not None:
            over[key] = getattr(args, key)
    if "steps" in over:
        over["warmup"] = min(b.warmup, max(1, over["steps"] // 5))
    return Budget(**{**b.__dict__, **over})


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    device = torch.device(args.device)
    budget = budget_from(args)
    names = args.losses.split(",")
    # each loss at its best learning rate on this task (BEST_LR), unless --lr says otherwise
    variants = [variant(n, args.lr if args.lr else BEST_LR.get(n, budget.lr)) for n in names]
    cfg = DataConfig()
    env = environment(args.device, "quick" if args.quick else "full", torch.float32)
    env.update(rspose_kernels=rk.__version__, pycocotools=package_version("pycocotools"),
               threads=torch.get_num_threads())
    print(f"# bench/train.py: {env['device']}, {env['threads']} threads, torch {env['torch']}, "
          f"commit {env['commit']}; losses {names}; seeds {list(budget.seeds)}, "
          f"{budget.steps} steps × batch {budget.batch}, {budget.val_size} validation "
          f"samples; ranking losses on backend '{resolve_backend('auto', device, 'auto')}'",
          flush=True)
    t0 = time.perf_counter()
    val = validation_set(budget.val_size, cfg)
    gt = coco_ground_truth(val["keypoints"], val["visible"], val["box"], val["area"])
    rows = []
    with tqdm(total=budget.steps * len(budget.seeds), desc="training", unit="step",
              disable=args.no_progress, file=sys.stderr, dynamic_ncols=True,
              mininterval=0.5 if sys.stderr.isatty() else 30) as bar:
        for seed in budget.seeds:
            bar.set_description(f"seed {seed}")
            rows += train_seed(seed, variants, budget, cfg, device, val, gt, env,
                               progress=bar, decoders=DECODERS)
    print(summary_table(rows))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    if not args.no_csv:
        append_csv(args.csv, rows, FIELDS)
        print(f"rows appended to {args.csv}")
    if args.plot:
        print(f"plot: {plot(rows, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
