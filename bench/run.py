"""Microbenchmark of the Rank & Sort losses (SPEC §8).

For each shape (vitpose, hires, large, simcc) and score regime (init, trained) it times every
provider: each backend in ``rk.available_backends(device)`` (by its name: ``algorithm="auto"``;
a backend with two algorithms also as ``cpu/pairwise``, ``cpu/bucketed``, ... with the
algorithm forced, and the auto row's note says how many rows the cost model made bucketed),
and the baselines ``mse`` (mmpose's
KeypointMSELoss form, the cost floor users know) and ``rs_loop`` (the public Rank & Sort code's
per-positive Python loop, bench/rs_loop_baseline.py, timed on a sample of positives and
extrapolated). The vectorised torch reference is ``torch/pairwise``.

``--calibrate`` fits the per-row cost model (rspose_kernels/backends/cost_model.py) to the
pairwise and bucketed times of this run and prints the constants to paste there.

Modes: ``fwd`` is the loss call on inputs that require grad (the Rank & Sort backends compute
the gradient there), ``bwd`` is ``loss.backward()``, ``full`` the two together. Each provider
gets untimed warm-up (one of which measures peak memory), then repeated timed runs: CUDA
events on a GPU (L2 flushed before each run), ``time.perf_counter`` on the CPU. Reported:
median, p20 and p80 in ms, peak memory, pair evaluations per second (pairs = Σ_rows |P|·L with
|P| counted by torch on the targets) and the ratio to ``mse``.

Output: a table on stdout, rows appended to bench/results/results.csv (keyed by date, run id,
git commit, device, torch/triton/CUDA versions), a PNG with --plot (bench/plot.py). Inputs come
from rspose_kernels.testing, like the tests'.

    python bench/run.py               # every shape and regime, the SPEC sizes
    python bench/run.py --quick       # CPU: reduced batches, ~40 s on 2 cores
    python bench/run.py --shapes vitpose --regimes init --providers torch,mse
    python bench/run.py --providers cpu,cpu/pairwise,cpu/bucketed --calibrate
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # siblings (rs_loop_baseline, plot) when imported from tests
    sys.path.insert(0, str(HERE))

import rspose_kernels as rk  # noqa: E402
from rspose_kernels.backends import cost_model  # noqa: E402
from rspose_kernels.losses import DEFAULT_DELTA, HEATMAP_POS_THR, SIMCC_POS_THR  # noqa: E402
from rspose_kernels.testing import REGIMES, SHAPES, shape_case  # noqa: E402

from rs_loop_baseline import loop_rank_sort_loss  # noqa: E402

RESULTS_DIR = HERE / "results"
MODES = ("fwd", "bwd", "full")
BASELINES = ("mse", "rs_loop")
FIELDS = ("date", "run_id", "run", "commit", "device", "device_type", "threads", "torch",
          "triton", "cuda", "dtype", "shape", "regime", "batch", "keypoints", "rows",
          "provider", "mode", "median_ms", "p20_ms", "p80_ms", "reps", "peak_mem_mb", "pairs",
          "pairs_per_s", "ratio_to_mse", "load_avg", "note", "pos_thr", "delta")

# --quick on a CPU: (batch, keypoints) per shape, the first b items and k keypoints of the SPEC
# case, sized so that all shapes and regimes fit ~40 s on 2 cores with the torch backend.
QUICK_SIZES = {"vitpose": (2, 17), "hires": (1, 4), "large": (1, 1), "simcc": (8, 17)}


@dataclass
class Policy:
    """How often to run a provider: warm-ups, then timed runs until there are ``reps`` of them
    and they took ``min_time`` seconds (cheap providers get more runs, for a stable median),
    but no more than ``max_reps`` runs, nor past ``max_time`` seconds (after the first)."""
    warmup: int
    reps: int
    min_time: float
    max_time: float
    max_reps: int
    loop_positives: int     # rs_loop sample: at most this many positives ...
    loop_pairs: int         # ... and about this many pairs


POLICIES = {
    ("cpu", "quick"): Policy(1, 3, 0.25, 1.0, 30, 200, 1_500_000),
    ("cpu", "full"): Policy(1, 5, 1.0, 30.0, 100, 2_000, 50_000_000),
    ("cuda", "quick"): Policy(2, 5, 0.05, 1.0, 50, 300, 5_000_000),
    ("cuda", "full"): Policy(2, 10, 0.25, 5.0, 200, 2_000, 50_000_000),
}


# ----------------------------------------------------------------------------- inputs

@dataclass
class Case:
    shape: str
    regime: str
    batch: int
    keypoints: int
    pred: object                # [B,K,H,W] tensor, or (x, y) for simcc; leaves requiring grad
    target: object
    weight: torch.Tensor
    groups: list                # [(scores [m, L] detached, labels [m, L] as the loss sees them)]
    pos_thr: float
    positives: int = 0
    pairs: int = 0
    rows: int = 0
    work: dict = None           # the cost model's work terms, summed over rows (calibration)

    @property
    def simcc(self) -> bool:
        return isinstance(self.pred, tuple)

    def leaves(self):
        return list(self.pred) if self.simcc else [self.pred]


def make_case(shape, regime, batch=None, keypoints=None, *, device="cpu",
              dtype=torch.float32, pos_thr=None) -> Case:
    """The SPEC §8 case from rspose_kernels.testing, cut to its first ``batch`` items and
    ``keypoints`` keypoints when given (quick mode). ``pos_thr``: the heatmap τ (default the
    pose-level one, what spatial_rs_loss uses; the trained regime is trained at it); SimCC
    shapes keep SimCC's τ."""
    b_full, k_full = SHAPES[shape][:2]
    b = b_full if batch is None else min(batch, b_full)
    k = k_full if keypoints is None else min(keypoints, k_full)
    heat_thr = HEATMAP_POS_THR if pos_thr is None else float(pos_thr)
    pred, target, weight = shape_case(shape, regime=regime, dtype=dtype, device=device,
                                      pos_thr=heat_thr)

    def cut(t):
        return t[:b, :k].contiguous()

    weight = cut(weight)
    if isinstance(pred, tuple):
        pred = tuple(cut(p).requires_grad_(True) for p in pred)
        target = tuple(cut(t) for t in target)
        pos_thr = SIMCC_POS_THR
        groups = []
        for p, t in zip(pred, target):
            # simcc_rs_loss ranks against targets rescaled to peak 1
            peak = t.amax(-1, keepdim=True)
            t = t / torch.where(peak > 0, peak, torch.ones_like(peak))
            groups.append((p.detach().reshape(-1, p.shape[-1]), t.reshape(-1, t.shape[-1])))
    else:
        pred = cut(pred).requires_grad_(True)
        target = cut(target)
        pos_thr = heat_thr
        length = pred.shape[-1] * pred.shape[-2]
        groups = [(pred.detach().reshape(-1, length), target.reshape(-1, length))]
    case = Case(shape, regime, b, k, pred, target, weight, groups, pos_thr)
    case.work = dict.fromkeys(("elements", "neg_pairs", "neg_pairs_all", "pos_pairs",
                               "neg_steps", "neg_steps_all", "pos_steps"), 0.0)
    for scores, labels in groups:
        npos = (labels > pos_thr).sum(1)
        case.positives += int(npos.sum())
        case.pairs += int(npos.sum()) * labels.shape[1]
        case.rows += labels.shape[0]
        for key, value in work_terms(scores, labels, pos_thr).items():
            case.work[key] += value
    return case


def work_terms(scores, labels, pos_thr, delta=DEFAULT_DELTA) -> dict:
    """Σ over rows of the cost model's terms (cost_model.py): the pairwise code's
    positive-negative pairs n·ñ (ñ pruned, or every negative for the torch code) and
    positive-positive pairs n², and the bucketed steps log2(2n)·ñ and log2(2n)·n."""
    pos = labels > pos_thr
    n = pos.sum(1).double()
    smin = torch.where(pos, scores, torch.full_like(scores, math.inf)).amin(1, keepdim=True)
    nn = (~pos & ~(scores < smin - delta)).sum(1).double()
    nn_all = (~pos).sum(1).double()
    steps = torch.where(n >= 2, torch.log2(2 * n.clamp(min=1)), 0.0)
    return {"elements": float(labels.numel()), "neg_pairs": float((n * nn).sum()),
            "neg_pairs_all": float((n * nn_all).sum()), "pos_pairs": float((n * n).sum()),
            "neg_steps": float((steps * nn).sum()), "neg_steps_all": float((steps * nn_all).sum()),
            "pos_steps": float((steps * n).sum())}


def estimate_pairs(shape, batch, keypoints) -> float:
    """Rough pair count before the inputs exist (progress-bar weights only)."""
    b_full, k_full, h, w, sigma = SHAPES[shape]
    rows = min(batch or b_full, b_full) * min(keypoints or k_full, k_full) * 0.9
    window = 6 * sigma + 1
    if shape == "simcc":
        return rows * window * (h + w)
    return rows * min(window ** 2, h * w) * h * w


# ----------------------------------------------------------------------------- providers

@dataclass
class Provider:
    name: str
    fn: object                  # () -> scalar loss
    leaves: list                # tensors whose .grad is cleared before each run
    scale: float = 1.0          # rs_loop: sample -> whole case
    pairs: int = 0              # pair evaluations a call stands for (0: not a ranking loss)
    note: str = ""
    max_reps: int | None = None


def mse_provider(case: Case) -> Provider:
    """mmpose's KeypointMSELoss with target weights: mean of the weighted squared error."""
    def heat(p, t, w):
        w = w.reshape(w.shape + (1,) * (p.dim() - 2))
        return (F.mse_loss(p, t, reduction="none") * w).mean()

    if case.simcc:
        fn = lambda: (heat(case.pred[0], case.target[0], case.weight)  # noqa: E731
                      + heat(case.pred[1], case.target[1], case.weight)) / 2
    else:
        fn = lambda: heat(case.pred, case.target, case.weight)  # noqa: E731
    return Provider("mse", fn, case.leaves(), note="cost floor (F.mse_loss, target weights)")


def backend_provider(case: Case, name: str, device_type: str = "cpu") -> Provider:
    """``backend`` (algorithm "auto") or ``backend/algorithm``."""
    backend, _, algorithm = name.partition("/")
    algorithm = algorithm or "auto"
    loss = rk.simcc_rs_loss if case.simcc else rk.spatial_rs_loss
    note = ""
    if backend == "torch" and algorithm == "pairwise":
        note = "vectorised reference"
    elif algorithm == "auto" and len(rk.available_algorithms(backend, device_type)) > 1:
        note = auto_note(case, backend)
    return Provider(name, lambda: loss(case.pred, case.target, case.weight, backend=backend,
                                       algorithm=algorithm, pos_thr=case.pos_thr).loss,
                    case.leaves(), pairs=case.pairs, note=note)


def auto_note(case: Case, backend: str) -> str:
    """How many non-empty rows the cost model sends to the bucketed algorithm."""
    picked = rows = 0
    for scores, labels in case.groups:
        plan = cost_model.plan_rows(scores, labels, DEFAULT_DELTA, case.pos_thr, "auto",
                                    backend)
        picked += int(plan.sum())
        rows += int((labels > case.pos_thr).any(1).sum())
    return f"auto: {picked}/{rows} rows bucketed"


def loop_provider(case: Case, policy: Policy) -> Provider:
    """The per-positive loop on a sample: non-empty rows taken evenly across the case, whole
    while the budget lasts, the last one cut to the positives left; the time is scaled by
    (pairs of the case) / (pairs of the sample), the loop's cost being per positive × L."""
    picked = []                                   # (group, row, positives looped, |P|)
    rows = [(g, r, int(n)) for g, (_, labels) in enumerate(case.groups)
            for r, n in enumerate((labels > case.pos_thr).sum(1).tolist()) if n > 0]
    if rows:
        step = max(1, len(rows) // 8)
        order = rows[::step] + [x for i, x in enumerate(rows) if i % step]
        budget_pos, budget_pairs = policy.loop_positives, policy.loop_pairs
        for g, r, n in order:
            length = case.groups[g][1].shape[1]
            take = min(n, budget_pos, max(1, budget_pairs // length))
            picked.append((g, r, take, n))
            budget_pos -= take
            budget_pairs -= take * length
            if budget_pos <= 0 or budget_pairs <= 0:
                break
    parts = []
    sample_pairs = sample_pos = 0
    for g, (scores, labels) in enumerate(case.groups):
        sel = [(r, take) for gg, r, take, _ in picked if gg == g]
        if not sel:
            continue
        idx = torch.tensor([r for r, _ in sel], device=scores.device)
        leaf = scores.index_select(0, idx).clone().requires_grad_(True)
        parts.append((leaf, labels.index_select(0, idx), [take for _, take in sel]))
        sample_pos += sum(take for _, take in sel)
        sample_pairs += sum(take for _, take in sel) * labels.shape[1]

    def fn():
        total = 0
        for leaf, labels, limits in parts:
            total = total + loop_rank_sort_loss(leaf, labels, delta=DEFAULT_DELTA,
                                                pos_thr=case.pos_thr, limits=limits)
        return total if parts else torch.zeros((), requires_grad=True)

    scale = case.pairs / sample_pairs if sample_pairs else 0.0
    whole = sum(1 for _, _, take, n in picked if take == n)
    note = (f"time extrapolated x{scale:.3g} from {sample_pos} of {case.positives} positives "
            f"({len(picked)} rows, {whole} whole); peak mem: the sample's")
    return Provider("rs_loop", fn, [leaf for leaf, _, _ in parts], scale=scale,
                    pairs=case.pairs, note=note, max_reps=3)


def providers_for(device_type: str, wanted=None) -> list[str]:
    names = ["mse"]
    for b in rk.available_backends(device_type):
        # Triton on a CPU, or under TRITON_INTERPRET=1, is the interpreter (a test tool).
        if b == "triton" and (device_type == "cpu" or os.environ.get("TRITON_INTERPRET") == "1"):
            if device_type == "cuda":
                print("note: TRITON_INTERPRET=1 is set: triton not timed (unset it)",
                      file=sys.stderr)
            continue
        names.append(b)
        algorithms = rk.available_algorithms(b, device_type)
        if len(algorithms) > 1:
            names += [f"{b}/{a}" for a in algorithms]
    names.append("rs_loop")
    if wanted:
        unknown = [w for w in wanted if w not in names]
        if unknown:
            print(f"note: providers not available on {device_type} here, skipped: {unknown} "
                  f"(available: {names})", file=sys.stderr)
        names = [n for n in names if n in wanted]
    return names


# ----------------------------------------------------------------------------- timing

def quantile(values, q):
    """Linear-interpolated quantile of a non-empty list."""
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _clear(leaves):
    for t in leaves:
        t.grad = None


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


def _peak_cpu_bytes(run) -> float:
    """Peak of live torch CPU allocations during ``run()``: the profiler's memory events summed
    in time order. (RSS would miss what the allocator reuses, and tracemalloc does not see
    torch's allocator.)"""
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


def _peak_cuda_bytes(run) -> float:
    """Peak of torch.cuda.max_memory_allocated during ``run()``, above what was allocated
    before it (the inputs)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - base)


def measure(prov: Provider, device_type: str, policy: Policy, timer=time.perf_counter):
    """-> ({mode: [ms, ...]}, peak bytes or nan)."""
    def once():
        _clear(prov.leaves)
        prov.fn().backward()

    peak = float("nan")
    for i in range(policy.warmup):
        if i == policy.warmup - 1:
            try:
                peak = (_peak_cuda_bytes if device_type == "cuda" else _peak_cpu_bytes)(once)
                continue
            except Exception as exc:  # a profiler that does not work here: no memory number
                print(f"note: peak memory not measured ({exc})", file=sys.stderr)
        once()

    max_reps = min(policy.max_reps, prov.max_reps or policy.max_reps)
    times = {m: [] for m in MODES}
    flush = (torch.empty(256 << 20, dtype=torch.int8, device="cuda")
             if device_type == "cuda" else None)
    spent = 0.0
    while True:
        _clear(prov.leaves)
        if device_type == "cuda":
            flush.zero_()   # cold L2, as a training step finds it
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            ev[0].record()
            loss = prov.fn()
            ev[1].record()
            loss.backward()
            ev[2].record()
            torch.cuda.synchronize()
            fwd, bwd = ev[0].elapsed_time(ev[1]), ev[1].elapsed_time(ev[2])
            full = ev[0].elapsed_time(ev[2])
        else:
            t0 = timer()
            loss = prov.fn()
            t1 = timer()
            loss.backward()
            t2 = timer()
            fwd, bwd, full = (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t2 - t0) * 1e3
        del loss
        for m, t in zip(MODES, (fwd, bwd, full)):
            times[m].append(t * prov.scale)
        spent += full / 1e3
        n = len(times["full"])
        if n >= max_reps or spent >= policy.max_time:
            break
        if n >= policy.reps and spent >= policy.min_time:
            break
    return times, peak


# ----------------------------------------------------------------------------- environment

def git_commit() -> str:
    if os.environ.get("RSPOSE_GIT_COMMIT"):
        return os.environ["RSPOSE_GIT_COMMIT"]
    try:
        root = HERE.parent
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device_type: str) -> str:
    if device_type == "cuda":
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cpus)"


def package_version(name: str) -> str:
    """From the package metadata: importing it (triton on a CPU) is neither needed nor safe."""
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return ""


def environment(device_type: str, run_kind: str, dtype: torch.dtype) -> dict:
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "date": now.strftime("%Y-%m-%d"),
        "run_id": now.strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}",
        "run": run_kind,
        "commit": git_commit(),
        "device": device_name(device_type),
        "device_type": device_type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "cuda": torch.version.cuda or "",
        "dtype": str(dtype).replace("torch.", ""),
    }


# ----------------------------------------------------------------------------- rows and output

def load_avg():
    """1-minute load average: a shared machine's timings are only as good as this is low."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else ""


def rows_for(env: dict, case: Case, prov: Provider, times: dict, peak: float,
             load="") -> list[dict]:
    out = []
    for mode in MODES:
        med = quantile(times[mode], 0.5)
        out.append(dict(env, shape=case.shape, regime=case.regime, batch=case.batch,
                        keypoints=case.keypoints, rows=case.rows, provider=prov.name, mode=mode,
                        median_ms=med, p20_ms=quantile(times[mode], 0.2),
                        p80_ms=quantile(times[mode], 0.8), reps=len(times[mode]),
                        peak_mem_mb=peak / 2 ** 20, pairs=prov.pairs,
                        pairs_per_s=(prov.pairs / (med / 1e3) if prov.pairs and med > 0
                                     else ""),
                        ratio_to_mse="", load_avg=load, note=prov.note, pos_thr=case.pos_thr,
                        delta=DEFAULT_DELTA))
    return out


def add_ratios(rows: list[dict]) -> None:
    """ratio_to_mse: a provider's median over mse's, same case and mode."""
    mse = {(r["shape"], r["regime"], r["mode"]): r["median_ms"]
           for r in rows if r["provider"] == "mse"}
    for r in rows:
        ref = mse.get((r["shape"], r["regime"], r["mode"]))
        if ref:
            r["ratio_to_mse"] = r["median_ms"] / ref


def append_csv(path: Path, rows: list[dict], fields=None) -> None:
    """Append ``rows`` (columns ``fields``, default this benchmark's) to the CSV at ``path``."""
    fields = FIELDS if fields is None else tuple(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if header is not None and tuple(header) != fields:
            # Older layout: keep it aside rather than mixing two layouts in one file.
            stale = path.with_name(f"{path.stem}.{int(time.time())}.old{path.suffix}")
            path.rename(stale)
            print(f"note: {path} had another header; moved to {stale}", file=sys.stderr)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def _fmt_ms(v) -> str:
    if v >= 1e4:
        return f"{v / 1e3:.1f}s"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


# Fixed widths, so the table can be printed a case at a time (a killed run still shows some).
TABLE_HEAD = ("shape", "regime", "b x k", "provider", "fwd ms", "bwd ms", "fwd+bwd ms",
              "p20-p80", "reps", "peak MiB", "Gpair/s", "x mse", "note")
TABLE_WIDTHS = (7, 7, 5, 14, 8, 8, 10, 15, 4, 8, 7, 6)


def _table_line(cells) -> str:
    return "  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, TABLE_WIDTHS))) + "  " + cells[-1]


def format_table(rows: list[dict], header: bool = True) -> str:
    """One line per (shape, regime, provider): the three medians, the fwd+bwd spread, peak
    memory, and the pair rate and ratio to MSE of the fwd+bwd time."""
    by_key = {}
    for r in rows:
        by_key.setdefault((r["shape"], r["regime"], r["provider"]), {})[r["mode"]] = r
    lines = [_table_line(TABLE_HEAD)] if header else []
    for (shape, regime, prov), modes in by_key.items():
        full = modes["full"]
        rate = full["pairs_per_s"]
        ratio = full["ratio_to_mse"]
        peak = full["peak_mem_mb"]
        lines.append(_table_line((
            shape, regime, f"{full['batch']}x{full['keypoints']}", prov,
            _fmt_ms(modes["fwd"]["median_ms"]), _fmt_ms(modes["bwd"]["median_ms"]),
            _fmt_ms(full["median_ms"]), f"{_fmt_ms(full['p20_ms'])}-{_fmt_ms(full['p80_ms'])}",
            str(full["reps"]), "-" if peak != peak else f"{peak:.3g}",
            "-" if rate == "" else f"{rate / 1e9:.3g}",
            "-" if ratio == "" else f"{ratio:.0f}" if ratio >= 100 else f"{ratio:.3g}",
            full["note"])))
    return "\n".join(lines)


class Progress:
    """tqdm on stderr, weighted by rough costs (pairs), with the case being timed as postfix."""

    def __init__(self, total: float, enabled: bool = True):
        from tqdm import tqdm   # installed by scripts/setup.sh
        # In a log (not a terminal) a redraw every few seconds, not ten per second.
        self.bar = tqdm(total=max(total, 1e-9), disable=not enabled, file=sys.stderr,
                        unit="pair", unit_scale=True, dynamic_ncols=True, leave=False,
                        mininterval=0.1 if sys.stderr.isatty() else 5.0,
                        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    @property
    def total(self) -> float:
        return self.bar.total

    @total.setter
    def total(self, value: float) -> None:
        self.bar.total = max(value, 1e-9)

    def update(self, label: str, weight: float = 0.0) -> None:
        self.bar.set_postfix_str(label, refresh=False)
        self.bar.update(weight)

    def clear_line(self) -> None:
        """Before stdout prints on the terminal the bar is drawn on."""
        self.bar.clear()

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------- driver

def bench_case(case: Case, names, device_type, policy, env, progress=None,
               timer=time.perf_counter) -> list[dict]:
    rows = []
    for name in names:
        if name == "mse":
            prov = mse_provider(case)
        elif name == "rs_loop":
            prov = loop_provider(case, policy)
        else:
            prov = backend_provider(case, name, device_type)
        if progress:
            progress.update(f"{case.shape}/{case.regime} {name}")
        load = load_avg()
        times, peak = measure(prov, device_type, policy, timer)
        rows += rows_for(env, case, prov, times, peak, load)
        if progress:
            # Weights count the backends only; the baselines' time is absorbed in the rate.
            progress.update(f"{case.shape}/{case.regime} {name} done",
                            weight=0.0 if name in BASELINES else case.pairs)
    add_ratios(rows)
    return rows


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats; on a CPU also reduced sizes (the first b items "
                         "and k keypoints; see the b x k column)")
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
    ap.add_argument("--repeat", type=int, help="timed runs per provider (default: policy)")
    ap.add_argument("--csv", type=Path, default=RESULTS_DIR / "results.csv",
                    help="results file rows are appended to (default: %(default)s)")
    ap.add_argument("--no-save", action="store_true", help="print only, append nothing")
    ap.add_argument("--plot", action="store_true",
                    help="also write a PNG of this run (needs matplotlib)")
    ap.add_argument("--deadline", type=float, default=0,
                    help="seconds after which the remaining cases are skipped (0: none)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--cpu-time", action="store_true",
                    help="CPU: one thread, timed by process CPU time (time.process_time), which "
                         "a loaded machine disturbs far less than wall time; for --calibrate")
    ap.add_argument("--calibrate", action="store_true",
                    help="fit the per-row cost model to this run's <backend>/pairwise and "
                         "<backend>/bucketed times and print its constants")
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- calibration

def calibrate(rows: list[dict], work: dict, backend: str):
    """Fits the cost model to the fwd+bwd medians of this run's ``backend/pairwise`` and
    ``backend/bucketed`` providers, over every case that has both:

        pairwise ≈ e·elements + π·n·ñ + π_p·n²
        bucketed ≈ e·elements + κn·log2(2n)·ñ + κp·log2(2n)·n

    (sums over rows; the per-element cost e — preparation, checks — is shared by the two, and
    the torch pairwise code's ñ is every negative), a non-negative least squares in relative
    error. Returns (CostModel(κn/π, κp/π, π_p/π), a line describing the fit) or None."""
    import numpy as np
    med = {(r["shape"], r["regime"], r["provider"]): r["median_ms"]
           for r in rows if r["mode"] == "full"}
    sfx = "_all" if backend == "torch" else ""
    x, y = [], []
    for key, w in work.items():
        tp, tb = med.get(key + (f"{backend}/pairwise",)), med.get(key + (f"{backend}/bucketed",))
        if tp is None or tb is None:
            continue
        x.append([w["elements"], w["neg_pairs" + sfx], w["pos_pairs"], 0, 0])
        y.append(tp)
        x.append([w["elements"], 0, 0, w["neg_steps" + sfx], w["pos_steps"]])
        y.append(tb)
    if len(x) < 6:
        return None
    x, y = np.asarray(x), np.asarray(y)
    x, y = x / y[:, None], np.ones_like(y)       # relative error
    scale = x.max(0)
    scale[scale == 0] = 1
    try:
        from scipy.optimize import nnls
        coef = nnls(x / scale, y)[0] / scale
    except ImportError:   # plain least squares, clipped
        coef = np.clip(np.linalg.lstsq(x / scale, y, rcond=None)[0], 0, None) / scale
    e, pi, pi_p, kn, kp = coef
    if pi <= 0:
        return None, (f"# cost model for {backend!r}: the fit found no per-pair cost "
                      f"(coefficients {coef.tolist()}); the cases of this run do not "
                      f"determine it")
    model = cost_model.CostModel(*(float(f"{v:.3g}") for v in (kn / pi, kp / pi, pi_p / pi)))
    worst = float(np.abs(x @ coef - 1).max())
    line = (f"# cost model for {backend!r} (fit over {len(x) // 2} cases, worst relative "
            f"residual {worst:.0%}): {model}; per element {e * 1e6:.3g} ns, pairwise "
            f"{pi * 1e6:.3g} / {pi_p * 1e6:.3g} ns per pos-neg / pos-pos pair, bucketed "
            f"{kn * 1e6:.3g} / {kp * 1e6:.3g} ns per negative / positive step "
            f"(now in cost_model.py: {cost_model.COSTS.get(backend)})")
    return model, line


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
    if args.repeat:
        policy = Policy(policy.warmup, args.repeat, 0.0, float("inf"), args.repeat,
                        policy.loop_positives, policy.loop_pairs)
    if args.batch or args.keypoints:
        run_kind = "custom"
    dtype = getattr(torch, args.dtype)
    timer = time.perf_counter
    if args.cpu_time:
        if device_type != "cpu":
            raise SystemExit("--cpu-time: CPU only")
        torch.set_num_threads(1)
        timer = time.process_time
        run_kind = "cputime"
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
        print("# reduced sizes: the b x k column is the batch and keypoints used (SPEC sizes: "
              + ", ".join(f"{s} {SHAPES[s][0]}x{SHAPES[s][1]}" for s in shapes) + ")")
    print(_table_line(TABLE_HEAD), flush=True)

    n_rs = sum(1 for n in names if n not in BASELINES)
    plan = [(s, r) for s in shapes for r in regimes]
    progress = Progress(sum(estimate_pairs(s, *size(s)) * n_rs for s, r in plan),
                        enabled=not args.no_progress)
    t_start = time.perf_counter()
    all_rows, skipped = [], []
    work = {}
    for shape, regime in plan:
        if args.deadline and time.perf_counter() - t_start > args.deadline:
            skipped.append(f"{shape}/{regime}")
            continue
        case = make_case(shape, regime, *size(shape), device=device_type, dtype=dtype,
                         pos_thr=args.pos_thr)
        # The estimate becomes the real pair count for this case's share of the bar.
        progress.total += (case.pairs - estimate_pairs(shape, *size(shape))) * n_rs
        rows = bench_case(case, names, device_type, policy, env, progress, timer)
        if not args.no_save:
            append_csv(args.csv, rows)
        progress.clear_line()
        print(format_table(rows, header=False), flush=True)
        all_rows += rows
        work[(shape, regime)] = case.work
        del case
        if device_type == "cuda":
            torch.cuda.empty_cache()
    progress.close()
    wall = time.perf_counter() - t_start

    cuda = device_type == "cuda"
    print("# fwd: the loss call on inputs requiring grad (the Rank & Sort backends compute the "
          "gradient there); bwd: loss.backward();\n# Gpair/s and x mse use fwd+bwd; timer: "
          + ("CUDA events, L2 flushed" if cuda else
             "process_time, 1 thread" if args.cpu_time else "perf_counter")
          + "; peak: " + ("max_memory_allocated above the inputs" if cuda
                          else "live torch CPU allocations (profiler memory events)") + ".")
    if args.calibrate:
        for backend in cost_model.COSTS:
            fit = calibrate(all_rows, work, backend)
            print(fit[1] if fit else f"# cost model for {backend!r}: not enough "
                  f"{backend}/pairwise and {backend}/bucketed cases in this run to fit")
    if skipped:
        print(f"# deadline ({args.deadline:.0f} s) reached: skipped {', '.join(skipped)}")
    saved = "" if args.no_save else f"; rows appended to {args.csv}"
    print(f"# {len(plan) - len(skipped)} cases in {wall:.1f} s, load avg {load_avg()}{saved}")
    if args.plot and all_rows:
        try:
            import plot
            path = plot.plot_rows(all_rows, RESULTS_DIR)
            print(f"# plot: {path}")
        except ImportError as exc:
            print(f"# --plot skipped: {exc}. Install matplotlib, then "
                  f"`python bench/plot.py` plots the latest run from {args.csv}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
