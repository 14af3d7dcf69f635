"""Markdown from the benchmark's results: per-run tables, and the README's generated sections.

Per device, the latest run of the benchmark shapes (``run == "full"``), or the latest run of
any kind when there is none: fwd+bwd median (p20-p80), ratio to MSE, pair rate and peak
memory per shape, regime and provider.

The README's performance table and its "measured on" lines come from
bench/results/results.csv (the latest full CPU run at the package's heatmap τ, and beside it
the latest at τ 0); its test-time line from bench/results/test_runs.csv, which
``--record-tests`` appends to from a pytest log. Each lies between
``<!-- generated: bench.report NAME -->`` and ``<!-- /generated -->``.

    python3 -m bench.report                    # every device in the file
    python3 -m bench.report --device H100      # devices whose name contains "H100"
    python3 -m bench.report --run RUN_ID       # one given run
    python3 -m bench.report --markdown         # the README's generated sections
    python3 -m bench.report --write-readme     # rewrite them in README.md
    python3 -m bench.report --check-readme     # exit 1 if README.md's are stale
    python3 -m bench.report --record-tests pytest.log --seconds 710 --command "bash .ci/run"
"""
from __future__ import annotations

import datetime
import re
import sys
from pathlib import Path

from bench.harness.cli import doc_parser
from bench.harness.provenance import ROOT, device_name, git_commit
from bench.harness.results import RESULTS_CSV, RESULTS_DIR, append_csv, format_ms, load_csv
from rspose_kernels.losses import HEATMAP_POS_THR
from rspose_kernels.testing import REGIMES, SHAPES

DEFAULT_CSV = RESULTS_CSV
TESTS_CSV = RESULTS_DIR / "test_runs.csv"
TEST_FIELDS = ("date", "commit", "machine", "command", "seconds", "passed", "failed",
               "skipped", "errors", "note")
README = ROOT / "README.md"
PROVIDER_ORDER = ("mse", "cuda", "triton", "cpu", "cpu/pairwise", "cpu/bucketed", "torch",
                  "torch/pairwise", "torch/bucketed", "rs_loop")


def latest_runs(rows: list[dict], device: str | None = None, run_id: str | None = None):
    """The run to show per device.

    Args:
        rows: result rows.
        device: keep devices whose name contains it (case-insensitive).
        run_id: this run (on every device it ran on) instead.

    Returns:
        ``{device: run_id}``: the newest full run, else the newest run.
    """
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
        ratio, rate, peak = (_num(r[k]) for k in ("ratio_to_mse", "pairs_per_s", "peak_mem_mb"))
        spread = f"{format_ms(float(r['p20_ms']))}–{format_ms(float(r['p80_ms']))}"
        lines.append(
            f"| {r['shape']} | {r['regime']} | {r['batch']}×{r['keypoints']} | {r['provider']} | "
            f"{format_ms(float(r['median_ms']))} ({spread}) | "
            f"{'—' if ratio is None else _ratio(ratio)} | "
            f"{'—' if rate is None else _rate(rate)} | "
            f"{'—' if peak is None or peak != peak else f'{peak:.3g} MiB'} | {r['note']} |")
    return "\n".join(lines)


def report(rows: list[dict], device: str | None = None, run_id: str | None = None) -> str:
    """One heading line and :func:`run_table` per device (:func:`latest_runs`)."""
    picked = latest_runs(rows, device, run_id)
    if not picked:
        return "No results match (run `python3 -m bench.run` first)."
    parts = []
    for dev, rid in sorted(picked.items()):
        run = [r for r in rows if r["run_id"] == rid and r["device"] == dev]
        r0 = run[0]
        what = {"full": "benchmark shapes", "quick": "quick run, reduced batch",
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


# ----------------------------------------------------------------------------- README: perf

# (heading, provider, τ-0 run?) of the README's performance table, after shape and regime.
README_COLUMNS = (("MSE", "mse", False), ("`cpu` pairwise", "cpu/pairwise", False),
                  ("`cpu` bucketed", "cpu/bucketed", False),
                  ("**`cpu` auto** (rows bucketed)", "cpu", False),
                  ("`cpu` auto at τ 0", "cpu", True),
                  ("`torch` pairwise (reference)", "torch/pairwise", False),
                  ("`torch` auto", "torch", False), ("public-code loop*", "rs_loop", False))


def _heatmap_thr(run: list[dict]) -> float | None:
    return next((float(r["pos_thr"]) for r in run if r["shape"] != "simcc"), None)


def readme_runs(rows: list[dict]) -> tuple[str, str] | None:
    """The newest full float32 CPU run at the package's heatmap τ with every README column,
    and the newest such run at τ 0 on the same device (run ids start with a UTC time)."""
    by_run = {}
    for r in rows:
        if r["run"] == "full" and r["device_type"] == "cpu" and r["dtype"] == "float32":
            by_run.setdefault(r["run_id"], []).append(r)
    need = {p for _, p, _ in README_COLUMNS}
    complete = {rid: run for rid, run in by_run.items()
                if need <= {r["provider"] for r in run}}
    main = [rid for rid, run in complete.items() if _heatmap_thr(run) == HEATMAP_POS_THR]
    if not main:
        return None
    rid = max(main)
    dev = by_run[rid][0]["device"]
    tau0 = [r for r, run in by_run.items() if _heatmap_thr(run) == 0.0 and run[0]["device"] == dev
            and "cpu" in {x["provider"] for x in run}]
    return rid, max(tau0) if tau0 else ""


def _shape_label(shape: str) -> str:
    b, k, h, w, sigma = SHAPES[shape]
    size = f"x {w} / y {h}" if shape == "simcc" else f"{h}×{w}"
    return f"{shape} ({b}×{k}, {size}, {sigma:g})"


def _loads(run: list[dict]) -> str:
    loads = [float(r["load_avg"]) for r in run if r.get("load_avg")]
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "unknown"


def readme_perf(rows: list[dict]) -> str:
    """The README's performance section: where it was measured, and the table."""
    picked = readme_runs(rows)
    if picked is None:
        return "No full CPU run at the default τ in bench/results/results.csv yet."
    rid, rid0 = picked
    run = [r for r in rows if r["run_id"] == rid and r["mode"] == "full"]
    run0 = [r for r in rows if r["run_id"] == rid0 and r["mode"] == "full"]
    med = {(r["shape"], r["regime"], r["provider"], False): r for r in run}
    med.update({(r["shape"], r["regime"], r["provider"], True): r for r in run0})
    r0 = run[0]
    tau0 = (f"; the τ 0 column is run `{rid0}`, `python3 -m bench.run --pos-thr 0`, load "
            f"average {_loads(run0)}" if rid0 else "")
    lines = [f"Run `{rid}` of `python3 -m bench.run` (all rows, with p20/p80, peak memory and "
             f"pairs/s, in `bench/results/results.csv`; `python3 -m bench.report` prints "
             f"them){tau0}. Device: {r0['device']}, torch {r0['torch']} ({r0['threads']} "
             f"threads), {r0['date']}, commit {r0['commit']}, load average {_loads(run)}.", "",
             "| shape (B×K, H×W, σ) | regime | "
             + " | ".join(h for h, _, _ in README_COLUMNS) + " |",
             "|---|---|" + "---|" * len(README_COLUMNS)]
    for shape in dict.fromkeys(r["shape"] for r in run):
        for i, regime in enumerate(x for x in REGIMES if (shape, x, "mse", False) in med):
            cells = [_shape_label(shape) if i == 0 else shape, regime]
            for _, prov, zero in README_COLUMNS:
                r = med.get((shape, regime, prov, zero))
                text = "—" if r is None else format_ms(float(r["median_ms"]))
                if r is not None and prov == "cpu" and not zero:
                    m = re.search(r"(\d+/\d+) rows bucketed", r["note"])
                    text = f"**{text}**" + (f" ({m.group(1)})" if m else "")
                cells.append(text)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- README: tests

def parse_pytest_summary(text: str) -> dict:
    """Counts from the last pytest summary line of a log ("719 passed, 18 skipped in ...").

    Raises:
        ValueError: the text has no summary line.
    """
    words = ("passed", "failed", "skipped", "error", "errors")
    for line in reversed(text.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", line)
        if found and re.search(r"\bin \d", line):
            counts = dict.fromkeys(("passed", "failed", "skipped", "errors"), 0)
            for n, word in found:
                counts["errors" if word.startswith("error") else word] += int(n)
            return counts
    raise ValueError(f"no pytest summary line ({', '.join(words)} ... in N s) in the log")


def record_tests(log: Path, seconds: float, command: str, note: str = "",
                 path: Path = TESTS_CSV, commit: str | None = None,
                 machine: str | None = None) -> dict:
    """Appends one test run to ``path`` (test_runs.csv) and returns the row."""
    row = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
               commit=commit or git_commit(), machine=machine or device_name("cpu"),
               command=command, seconds=round(float(seconds)), note=note,
               **parse_pytest_summary(log.read_text(errors="replace")))
    append_csv(path, [row], TEST_FIELDS)
    return row


def readme_tests(rows: list[dict]) -> str:
    """The README's test-time line, from the newest test_runs.csv row."""
    if not rows:
        return "- test command: no run recorded in bench/results/test_runs.csv yet."
    r = rows[-1]
    counts = ", ".join(f"{r[k]} {k}" for k in ("passed", "failed", "skipped", "errors")
                       if int(r[k]) or k == "passed")
    note = f" {r['note']}," if r["note"] else ""
    return (f"- test command (`{r['command']}`{note} {r['date']}, {r['machine']}, commit "
            f"{r['commit']}): {round(int(r['seconds']) / 60)} min from nothing "
            f"({r['seconds']} s), {counts};")


# ----------------------------------------------------------------------------- README: markers

MARKER = re.compile(r"(<!-- generated: bench\.report (\w+) -->\n)(.*?)(^[ \t]*<!-- /generated -->)",
                    re.DOTALL | re.MULTILINE)


def sections(results: Path = RESULTS_CSV, tests: Path = TESTS_CSV) -> dict:
    """``{name: generated markdown}`` for every README section."""
    return {"perf": readme_perf(load_csv(results) if results.exists() else []),
            "tests": readme_tests(load_csv(tests) if tests.exists() else [])}


def render(text: str, generated: dict) -> str:
    """``text`` with every marked section replaced by ``generated[name]``.

    Raises:
        KeyError: a marker names a section there is no generator for.
    """
    return MARKER.sub(lambda m: m.group(1) + generated[m.group(2)] + "\n" + m.group(4), text)


def main(argv=None) -> int:
    ap = doc_parser(__doc__, skip=3)
    ap.add_argument("--device", help="substring of the device name")
    ap.add_argument("--run", help="a run_id")
    ap.add_argument("--markdown", action="store_true", help="print the README's sections")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--write-readme", action="store_true", help="rewrite the marked sections")
    ap.add_argument("--check-readme", action="store_true",
                    help="exit 1 if a marked section differs from what would be generated")
    ap.add_argument("--tests-csv", type=Path, default=TESTS_CSV)
    ap.add_argument("--record-tests", type=Path, metavar="LOG",
                    help="append the pytest summary of LOG to --tests-csv")
    ap.add_argument("--seconds", type=float, help="with --record-tests: wall time, from nothing")
    ap.add_argument("--command", default="bash .ci/run", help="with --record-tests")
    ap.add_argument("--note", default="", help="with --record-tests, e.g. 'from a clean clone'")
    args = ap.parse_args(argv)
    if args.record_tests:
        if args.seconds is None:
            ap.error("--record-tests needs --seconds")
        print(record_tests(args.record_tests, args.seconds, args.command, args.note,
                           args.tests_csv))
        return 0
    if args.markdown or args.write_readme or args.check_readme:
        generated = sections(args.csv, args.tests_csv)
        if args.markdown:
            print("\n\n".join(f"<!-- {k} -->\n{v}" for k, v in generated.items()))
        if args.write_readme or args.check_readme:
            text = args.readme.read_text()
            new = render(text, generated)
            if args.check_readme and new != text:
                print(f"{args.readme}: generated sections are stale; run `python3 -m "
                      f"bench.report --write-readme`", file=sys.stderr)
                return 1
            if args.write_readme and new != text:
                args.readme.write_text(new)
                print(f"rewrote the generated sections of {args.readme}")
        return 0
    if not args.csv.exists():
        print(f"{args.csv} does not exist: run `python3 -m bench.run` first", file=sys.stderr)
        return 1
    print(report(load_csv(args.csv), args.device, args.run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
