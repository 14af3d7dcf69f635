"""Fit the per-row cost model (rspose_kernels/backends/cost_model.py) to benchmark rows.

Reads the fwd+bwd medians of ``<backend>/pairwise`` and ``<backend>/bucketed`` of one run in
bench/results/results.csv (default: the latest run that has both for some backend), rebuilds
each case's rows to count the model's work terms, and prints the constants to paste into the
backend's module (``native.CPU_COST``, ``torch_backend.COST``, ...):

    pairwise ≈ e·elements + π·n·ñ + π_p·n²
    bucketed ≈ e·elements + κn·log2(2n)·ñ + κp·log2(2n)·n

(sums over rows; the per-element cost e — preparation, checks — is shared by the two, and the
torch pairwise code's ñ is every negative), a non-negative least squares in relative error.
The cost model is fitted on process CPU time, one thread:

    python3 -m bench.run --providers cpu/pairwise,cpu/bucketed --cpu-time
    python3 -m bench.calibrate                     # the latest such run
    python3 -m bench.calibrate --run RUN_ID --backend cpu
    python3 -m bench.calibrate --run RUN_A,RUN_B     # one fit over both runs' cases
"""
from __future__ import annotations

import sys

import torch

from bench.cases import make_case
from bench.harness.cli import doc_parser
from bench.harness.results import load_csv
from rspose_kernels.backends import cost_model
from rspose_kernels.losses import DEFAULT_DELTA

# The torch pairwise code evaluates every negative (torch_backend.bucketed_plan: prunes=False).
PRUNES = {"torch": False}


def current_cost(backend: str):
    """The constants the backend uses now, or None where its module does not import."""
    try:
        if backend in ("cpu", "cuda"):
            from rspose_kernels.backends import native
            return native.CPU_COST if backend == "cpu" else native.CUDA_COST
        if backend == "torch":
            from rspose_kernels.backends import torch_backend
            return torch_backend.COST
        if backend == "triton":
            from rspose_kernels.backends import triton_backend
            return triton_backend.COST
    except ImportError:
        return None
    return None


def work_terms(scores, labels, pos_thr, prunes=True, delta=DEFAULT_DELTA) -> dict:
    """Σ over rows of the cost model's work terms.

    Args:
        scores, labels: [M, L] rows as the losses rank them.
        pos_thr: the positive threshold.
        prunes: whether the backend's pairwise code prunes negatives (ñ) or evaluates all.
        delta: δ.

    Returns:
        elements, neg_pairs (n·ñ), pos_pairs (n²), neg_steps (log2(2n)·ñ) and pos_steps
        (log2(2n)·n), each summed over rows.
    """
    counts = cost_model.row_counts(scores, labels, delta, pos_thr, prunes)
    n, nn = counts.n.double(), counts.nn.double()
    steps = torch.where(n >= 2, torch.log2(2 * n.clamp(min=1)), 0.0)
    return {"elements": float(labels.numel()), "neg_pairs": float((n * nn).sum()),
            "pos_pairs": float((n * n).sum()), "neg_steps": float((steps * nn).sum()),
            "pos_steps": float((steps * n).sum())}


def _case_key(r) -> tuple:
    return (r["shape"], r["regime"], int(r["batch"]), int(r["keypoints"]), float(r["pos_thr"]))


def case_work(key: tuple, prunes: bool) -> dict:
    """Work terms of the case a result row was timed on (``_case_key``)."""
    shape, regime, batch, keypoints, pos_thr = key
    case = make_case(shape, regime, batch, keypoints,
                     pos_thr=None if shape == "simcc" else pos_thr)
    total = {}
    for scores, labels in case.groups:
        for k, v in work_terms(scores, labels, case.pos_thr, prunes).items():
            total[k] = total.get(k, 0.0) + v
    return total


def fit(rows: list[dict], backend: str, work_of=case_work):
    """Fits the cost model of ``backend`` to one run's rows.

    Args:
        rows: result rows (from the CSV or a run) of one run.
        backend: e.g. "cpu".
        work_of: ``(case key, prunes) -> work terms`` (tests pass their own).

    Returns:
        ``(CostModel or None, a line describing the fit or why there is none)``.
    """
    import numpy as np
    med = {(_case_key(r), r["provider"]): float(r["median_ms"])
           for r in rows if r["mode"] == "full"}
    keys = [k for k, p in med if p == f"{backend}/pairwise" and (k, f"{backend}/bucketed") in med]
    if len(keys) < 3:
        return None, (f"# cost model for {backend!r}: not enough {backend}/pairwise and "
                      f"{backend}/bucketed cases in this run to fit")
    prunes = PRUNES.get(backend, True)
    x, y = [], []
    for key in keys:
        w = work_of(key, prunes)
        x.append([w["elements"], w["neg_pairs"], w["pos_pairs"], 0, 0])
        y.append(med[(key, f"{backend}/pairwise")])
        x.append([w["elements"], 0, 0, w["neg_steps"], w["pos_steps"]])
        y.append(med[(key, f"{backend}/bucketed")])
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
    line = (f"# cost model for {backend!r} (fit over {len(keys)} cases, worst relative "
            f"residual {worst:.0%}): {model}; per element {e * 1e6:.3g} ns, pairwise "
            f"{pi * 1e6:.3g} / {pi_p * 1e6:.3g} ns per pos-neg / pos-pos pair, bucketed "
            f"{kn * 1e6:.3g} / {kp * 1e6:.3g} ns per negative / positive step "
            f"(now: {current_cost(backend)})")
    return model, line


def fitted_backends(rows: list[dict]) -> list[str]:
    """Backends with both forced algorithms among ``rows``, in order of appearance."""
    provs = {r["provider"] for r in rows}
    seen = dict.fromkeys(p.partition("/")[0] for p in provs if p.endswith("/pairwise"))
    return [b for b in seen if f"{b}/bucketed" in provs]


def report(rows: list[dict], backends=None) -> list[str]:
    """One line per backend: its fit over ``rows``."""
    return [fit(rows, b)[1] for b in (backends or fitted_backends(rows))]


def latest_fittable_run(rows: list[dict]) -> str | None:
    """The newest run id (ids start with a UTC timestamp) with both algorithms of a backend."""
    by_run = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    ids = [rid for rid, rs in by_run.items() if fitted_backends(rs)]
    return max(ids) if ids else None


def main(argv=None) -> int:
    ap = doc_parser(__doc__)
    ap.add_argument("--run", help="a run_id, or a comma list of them fitted together (e.g. "
                                  "runs at two --pos-thr); default: the latest run with both "
                                  "algorithms")
    ap.add_argument("--backend", help="comma list (default: every backend with both)")
    args = ap.parse_args(argv)
    rows = load_csv(args.csv)
    run_ids = [r for r in (args.run or latest_fittable_run(rows) or "").split(",") if r]
    run = [r for r in rows if r["run_id"] in run_ids]
    if not run:
        print(f"no run with <backend>/pairwise and <backend>/bucketed rows in {args.csv}",
              file=sys.stderr)
        return 1
    for run_id in run_ids:
        first = next((r for r in run if r["run_id"] == run_id), None)
        if first is None:
            print(f"--run: no rows of run {run_id} in {args.csv}", file=sys.stderr)
            return 1
        print(f"# run {run_id} ({first['run']}, {first['device']}, {first['date']}, "
              f"pos_thr {sorted({r['pos_thr'] for r in run if r['run_id'] == run_id})})")
    backends = [b for b in (args.backend or "").split(",") if b] or None
    print("\n".join(report(run, backends)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
