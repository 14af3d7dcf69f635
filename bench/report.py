"""Markdown performance table from bench/results/results.csv (for the README).

Picks, per device, the latest run of the SPEC sizes (``run == "full"``), or the latest run of
any kind when there is none, and prints one table per device: fwd+bwd median (p20-p80), ratio
to MSE, pair rate and peak memory per shape, regime and provider.

    python bench/report.py                    # every device in the file
    python bench/report.py --device H100      # devices whose name contains "H100"
    python bench/report.py --run RUN_ID       # one given run
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CSV = HERE / "results" / "results.csv"
PROVIDER_ORDER = ("mse", "cuda", "triton", "cpu", "cpu/pairwise", "cpu/bucketed", "torch",
                  "torch/pairwise", "torch/bucketed", "rs_loop")


def load(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def latest_runs(rows: list[dict], device: str | None = None, run_id: str | None = None):
    """{device: run_id} chosen as the module docstring says."""
    if run_id:
        devs = {r["device"] for r in rows if r["run_id"] == run_id}
        return {d: run_id for d in devs}
    best = {}
    for r in rows:
        if device and device.lower() not in r["device"].lower():
            continue
        # Full runs first, then the newest (run ids start with a UTC timestamp).
        key = (r["run"] == "full", r["run_id"])
        if r["device"] not in best or key > best[r["device"]][0]:
            best[r["device"]] = (key, r["run_id"])
    return {d: v[1] for d, v in best.items()}


def _ms(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    if v >= 10:
        return f"{v:.0f} ms"
    if v >= 1:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def _ratio(v: float) -> str:
    return f"{v:.0f}×" if v >= 100 else f"{v:.3g}×"


def _rate(v: float) -> str:
    return f"{v / 1e9:.3g} G" if v >= 1e9 else f"{v / 1e6:.3g} M"


def _num(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def run_table(rows: list[dict]) -> str:
    """Markdown table of one run's fwd+bwd rows."""
    full = [r for r in rows if r["mode"] == "full"]
    order = {p: i for i, p in enumerate(PROVIDER_ORDER)}
    shapes = list(dict.fromkeys(r["shape"] for r in full))
    full.sort(key=lambda r: (shapes.index(r["shape"]), r["regime"],
                             order.get(r["provider"], len(order)), r["provider"]))
    lines = ["| shape | regime | batch×K | provider | fwd+bwd median (p20–p80) | × MSE | "
             "pairs/s | peak mem | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in full:
        ratio = _num(r["ratio_to_mse"])
        rate = _num(r["pairs_per_s"])
        peak = _num(r["peak_mem_mb"])
        lines.append(
            f"| {r['shape']} | {r['regime']} | {r['batch']}×{r['keypoints']} | {r['provider']} | "
            f"{_ms(float(r['median_ms']))} ({_ms(float(r['p20_ms']))}–{_ms(float(r['p80_ms']))}) | "
            f"{'—' if ratio is None else _ratio(ratio)} | "
            f"{'—' if rate is None else _rate(rate)} | "
            f"{'—' if peak is None or peak != peak else f'{peak:.3g} MiB'} | {r['note']} |")
    return "\n".join(lines)


def report(rows: list[dict], device: str | None = None, run_id: str | None = None) -> str:
    picked = latest_runs(rows, device, run_id)
    if not picked:
        return "No results match (run `python bench/run.py` first)."
    parts = []
    for dev, rid in sorted(picked.items()):
        run = [r for r in rows if r["run_id"] == rid and r["device"] == dev]
        r0 = run[0]
        what = {"full": "SPEC sizes", "quick": "quick run, reduced batch",
                "custom": "custom sizes"}.get(r0["run"], r0["run"])
        cuda = f", CUDA {r0['cuda']}" if r0.get("cuda") else ""
        loads = [float(r["load_avg"]) for r in run if r.get("load_avg")]
        load = f", load avg ≤ {max(loads):.1f}" if loads else ""
        parts.append(
            f"**{dev}** — {r0['date']}, torch {r0['torch']}, triton {r0['triton'] or '—'}{cuda}, "
            f"{r0['threads']} threads{load}, {r0['dtype']}, commit {r0['commit']} ({what}; "
            f"run `{rid}`)\n\n" + run_table(run))
    if not any(r["device_type"] == "cuda" for r in rows):
        parts.append("No GPU measurement in this file yet.")
    return "\n\n".join(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--device", help="substring of the device name")
    ap.add_argument("--run", help="a run_id")
    args = ap.parse_args(argv)
    if not args.csv.exists():
        print(f"{args.csv} does not exist: run `python bench/run.py` first", file=sys.stderr)
        return 1
    print(report(load(args.csv), args.device, args.run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
