"""What the microbenchmark times (docs/DESIGN.md §8): each available backend (``name``, with
``algorithm="auto"``; ``name/algorithm`` forced where it has two), and the baselines ``mse``
(mmpose's KeypointMSELoss form, the cost floor users know) and ``rs_loop`` (the public Rank &
Sort code's per-positive Python loop, timed on a sample of positives and extrapolated)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import rspose_kernels as rk
from bench.cases import Case
from bench.harness.timing import Policy
from bench.rs_loop_baseline import loop_rank_sort_loss
from rspose_kernels import dispatch

BASELINES = ("mse", "rs_loop")


@dataclass
class Provider:
    """One timed call.

    Attributes:
        fn: ``() -> scalar loss``.
        leaves: tensors whose ``.grad`` is cleared before each run.
        scale: rs_loop: the sample's times are multiplied by it to stand for the case.
        pairs: pair evaluations a call stands for (0: not a ranking loss).
    """
    name: str
    fn: object
    leaves: list
    scale: float = 1.0
    pairs: int = 0
    note: str = ""


def mse_provider(case: Case) -> Provider:
    """mmpose's KeypointMSELoss with target weights: mean of the weighted squared error."""
    def heat(p, t, w):
        w = w.reshape(w.shape + (1,) * (p.dim() - 2))
        return (F.mse_loss(p, t, reduction="none") * w).mean()

    if case.simcc:
        def fn():
            return (heat(case.pred[0], case.target[0], case.weight)
                    + heat(case.pred[1], case.target[1], case.weight)) / 2
    else:
        def fn():
            return heat(case.pred, case.target, case.weight)
    return Provider("mse", fn, case.leaves(), note="cost floor (F.mse_loss, target weights)")


def backend_provider(case: Case, name: str, device_type: str = "cpu") -> Provider:
    """``backend`` (algorithm "auto") or ``backend/algorithm``, through the public losses."""
    backend, _, algorithm = name.partition("/")
    algorithm = algorithm or "auto"
    loss = rk.simcc_rs_loss if case.simcc else rk.spatial_rs_loss
    note = ""
    if backend == "torch" and algorithm == "pairwise":
        note = "vectorised reference"
    elif algorithm == "auto" and len(rk.available_algorithms(backend, device_type)) > 1:
        note = auto_note(case, backend)

    def fn():
        return loss(case.pred, case.target, case.weight, backend=backend,
                    algorithm=algorithm, pos_thr=case.pos_thr, delta=case.delta).loss
    return Provider(name, fn, case.leaves(), pairs=case.pairs, note=note)


def auto_note(case: Case, backend: str) -> str:
    """How many non-empty rows the backend's own plan sends to the bucketed algorithm."""
    plan = dispatch.backend_record(backend).bucketed_plan
    picked = rows = 0
    for scores, labels in case.groups:
        picked += int(plan(scores, labels, case.delta, case.pos_thr, "auto").sum())
        rows += int((labels > case.pos_thr).any(1).sum())
    return f"auto: {picked}/{rows} rows bucketed"


def loop_provider(case: Case, policy: Policy) -> Provider:
    """The per-positive loop on a sample.

    Non-empty rows taken evenly across the case, whole while the budget lasts, the last one
    cut to the positives left; the time is scaled by (pairs of the case) / (pairs of the
    sample), the loop's cost being per positive × L.
    """
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
            total = total + loop_rank_sort_loss(leaf, labels, delta=case.delta,
                                                pos_thr=case.pos_thr, limits=limits)
        return total if parts else torch.zeros((), requires_grad=True)

    scale = case.pairs / sample_pairs if sample_pairs else 0.0
    whole = sum(1 for _, _, take, n in picked if take == n)
    note = (f"time extrapolated x{scale:.3g} from {sample_pos} of {case.positives} positives "
            f"({len(picked)} rows, {whole} whole); peak mem: the sample's")
    return Provider("rs_loop", fn, [leaf for leaf, _, _ in parts], scale=scale,
                    pairs=case.pairs, note=note)


def make_provider(case: Case, name: str, device_type: str, policy: Policy) -> Provider:
    """The provider called ``name`` (one of :func:`providers_for`'s) on ``case``."""
    if name == "mse":
        return mse_provider(case)
    if name == "rs_loop":
        return loop_provider(case, policy)
    return backend_provider(case, name, device_type)


def providers_for(device_type: str, wanted=None) -> list[str]:
    """The providers a run on ``device_type`` times.

    Args:
        device_type: "cpu" or "cuda".
        wanted: names to keep (unknown ones are reported on stderr); default all.

    Returns:
        "mse", then each available backend and its forced algorithms, then "rs_loop".
    """
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
