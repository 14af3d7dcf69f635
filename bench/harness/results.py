"""Result rows: the columns, the CSV files, the console table and the one millisecond format."""
from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

from bench.harness.timing import MODES

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
RESULTS_CSV = RESULTS_DIR / "results.csv"
FIELDS = ("date", "run_id", "run", "commit", "device", "device_type", "threads", "torch",
          "triton", "cuda", "dtype", "shape", "regime", "batch", "keypoints", "rows",
          "provider", "mode", "median_ms", "p20_ms", "p80_ms", "reps", "peak_mem_mb", "pairs",
          "pairs_per_s", "ratio_to_mse", "load_avg", "note", "pos_thr", "delta")


def format_ms(ms: float, unit: bool = True) -> str:
    """A time in milliseconds as the console table and the README show it.

    Args:
        ms: milliseconds.
        unit: append " ms" (or " s"); without it seconds still end in "s".

    Returns:
        "2.85 s" from 1 s up, "304 ms" from 100 ms, "40.8 ms" from 1 ms, "0.123 ms" below.
    """
    if ms >= 1000:
        return f"{ms / 1e3:.2f}" + (" s" if unit else "s")
    text = f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.3f}"
    return text + (" ms" if unit else "")


def quantile(values, q: float) -> float:
    """Linear-interpolated quantile of a non-empty list."""
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def timing_rows(base: dict, times: dict, peak: float, pairs: int) -> list[dict]:
    """One row per mode.

    Args:
        base: the columns every mode shares (provenance, case, provider, note, ...).
        times: ``{mode: [ms per run]}`` (the modes timed; ``full`` always among them).
        peak: peak bytes (nan: not measured).
        pairs: pair evaluations one call stands for (0: not a ranking loss).

    Returns:
        Rows with median, p20, p80, reps, peak_mem_mb, pairs and pairs_per_s filled, and
        ratio_to_mse empty (:func:`add_ratios`).
    """
    out = []
    for mode in (m for m in MODES if m in times):
        med = quantile(times[mode], 0.5)
        out.append(dict(base, mode=mode, median_ms=med, p20_ms=quantile(times[mode], 0.2),
                        p80_ms=quantile(times[mode], 0.8), reps=len(times[mode]),
                        peak_mem_mb=peak / 2 ** 20, pairs=pairs,
                        pairs_per_s=pairs / (med / 1e3) if pairs and med > 0 else "",
                        ratio_to_mse=""))
    return out


def add_ratios(rows: list[dict]) -> None:
    """Sets ratio_to_mse: a provider's median over mse's, same case and mode."""
    mse = {(r["shape"], r["regime"], r["mode"]): r["median_ms"]
           for r in rows if r["provider"] == "mse"}
    for r in rows:
        ref = mse.get((r["shape"], r["regime"], r["mode"]))
        if ref:
            r["ratio_to_mse"] = r["median_ms"] / ref


def append_csv(path: Path, rows: list[dict], fields=None) -> None:
    """Appends ``rows`` to the CSV at ``path``.

    Args:
        path: the file; created with a header when missing, moved aside (``*.old.csv``)
            when its header is another layout.
        rows: dicts; keys not in ``fields`` are ignored.
        fields: the columns (default: :data:`FIELDS`).
    """
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


def load_csv(path: Path) -> list[dict]:
    """Every row of a CSV file, as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# Fixed widths, so the table can be printed a case at a time (a killed run still shows some).
TABLE_HEAD = ("shape", "regime", "b x k", "provider", "fwd ms", "bwd ms", "fwd+bwd ms",
              "p20-p80", "reps", "peak MiB", "Gpair/s", "x mse", "note")
TABLE_WIDTHS = (7, 7, 5, 14, 8, 8, 10, 15, 4, 8, 7, 6)


def table_line(cells) -> str:
    """One console line of ``TABLE_HEAD``'s columns."""
    return "  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, TABLE_WIDTHS))) + "  " + cells[-1]


def format_table(rows: list[dict], header: bool = True) -> str:
    """The console table of result rows.

    One line per (shape, regime, provider): the three medians ("-" for a mode not timed), the
    fwd+bwd spread, peak memory, and the pair rate and ratio to MSE of the fwd+bwd time.
    """
    by_key = {}
    for r in rows:
        by_key.setdefault((r["shape"], r["regime"], r["provider"]), {})[r["mode"]] = r
    lines = [table_line(TABLE_HEAD)] if header else []
    for (shape, regime, prov), modes in by_key.items():
        full = modes["full"]
        rate, ratio, peak = full["pairs_per_s"], full["ratio_to_mse"], full["peak_mem_mb"]
        lines.append(table_line((
            shape, regime, f"{full['batch']}x{full['keypoints']}", prov,
            *(format_ms(modes[m]["median_ms"], False) if m in modes else "-"
              for m in ("fwd", "bwd")),
            format_ms(full["median_ms"], False),
            f"{format_ms(full['p20_ms'], False)}-{format_ms(full['p80_ms'], False)}",
            str(full["reps"]), "-" if peak != peak else f"{peak:.3g}",
            "-" if rate == "" else f"{rate / 1e9:.3g}",
            "-" if ratio == "" else f"{ratio:.0f}" if ratio >= 100 else f"{ratio:.3g}",
            full["note"])))
    return "\n".join(lines)
