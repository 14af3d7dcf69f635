"""PNG of a benchmark run: fwd+bwd median per provider, one panel per shape, log scale.

    python3 -m bench.plot                 # latest run per device in bench/results/results.csv
    python3 -m bench.plot --run RUN_ID

Needs matplotlib (imported here only, so bench.run works without it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.harness.results import RESULTS_CSV, RESULTS_DIR, load_csv
from bench.report import PROVIDER_ORDER, latest_runs


def _matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib, which is not installed "
                          "(pip install matplotlib)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_rows(rows: list[dict], out_dir: Path) -> Path:
    """Draws one run.

    Args:
        rows: one run's result rows (from bench.run or the CSV).
        out_dir: where the PNG goes.

    Returns:
        The PNG's path.

    Raises:
        ImportError: matplotlib is not installed.
    """
    plt = _matplotlib()
    full = [r for r in rows if r["mode"] == "full"]
    shapes = list(dict.fromkeys(r["shape"] for r in full))
    regimes = list(dict.fromkeys(r["regime"] for r in full))
    providers = sorted({r["provider"] for r in full},
                       key=lambda p: (PROVIDER_ORDER.index(p) if p in PROVIDER_ORDER
                                      else len(PROVIDER_ORDER), p))
    fig, axes = plt.subplots(1, len(shapes), figsize=(max(6.5, 4.2 * len(shapes)), 4.2),
                             squeeze=False)
    width = 0.8 / max(len(providers), 1)
    for ax, shape in zip(axes[0], shapes):
        for j, prov in enumerate(providers):
            xs, ys, lo, hi = [], [], [], []
            for i, regime in enumerate(regimes):
                for r in full:
                    if (r["shape"], r["regime"], r["provider"]) == (shape, regime, prov):
                        med = float(r["median_ms"])
                        xs.append(i + (j - (len(providers) - 1) / 2) * width)
                        ys.append(med)
                        lo.append(med - float(r["p20_ms"]))
                        hi.append(float(r["p80_ms"]) - med)
            if xs:
                extrapolated = prov == "rs_loop"
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2,
                       hatch="//" if extrapolated else None,
                       label=f"{prov} (extrapolated)" if extrapolated else prov)
        b = next(r for r in full if r["shape"] == shape)
        ax.set_title(f"{shape} ({b['batch']}×{b['keypoints']})")
        ax.set_xticks(range(len(regimes)), regimes)
        ax.set_yscale("log")
        ax.set_ylabel("fwd+bwd ms (median, p20–p80)")
    axes[0][0].legend(fontsize="small")
    r0 = full[0]
    fig.suptitle(f"{r0['device']} · torch {r0['torch']} · {r0['date']} · {r0['run']} run",
                 fontsize="medium")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in r0["device"])[:40].strip("_")
    path = out_dir / f"bench_{slug}_{r0['run_id']}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=RESULTS_CSV)
    ap.add_argument("--run", help="a run_id (default: the latest run per device)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args(argv)
    rows = load_csv(args.csv)
    try:
        for dev, rid in latest_runs(rows, run_id=args.run).items():
            print(plot_rows([r for r in rows if r["run_id"] == rid and r["device"] == dev],
                            args.out))
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
