"""Where the `cpu` backend's time goes, per benchmark shape and regime (issue 23, item 2).

Two tables, both at the package defaults (heatmap τ ``HEATMAP_POS_THR``, SimCC τ
``SIMCC_POS_THR``, δ ``DEFAULT_DELTA``, algorithm ``auto``), on the cases bench/run.py times
(``bench.cases.make_case``) and through the same calls (``bench.providers``: the public loss
with ``backend="cpu"``, and MSE with target weights as the floor), forward + backward:

* timing (default): process CPU time per call on one thread (``time.process_time``,
  ``torch.set_num_threads(1)``), median over repeats, with the rows' statistics (positives and
  kept negatives per non-empty row, rows the cost model sends to the bucketed algorithm);
* ``--callgrind``: instruction counts (load-independent) of one call, split into the kernel's
  phases. Each case runs in a child process under ``valgrind --tool=callgrind`` with a
  debug-info copy of ``_C`` (same flags as the Release build, plus ``-g``; built out of tree,
  the installed module is not touched), instrumentation switched on after the warm-up and one
  output part dumped per call (client requests of a small C helper). The raw output is
  parsed here (per function, source file and line, with the call sites of calls that leave
  ``_C``), since an inlined helper's line only says which phase it is in together with the
  function it was inlined into; ``callgrind_annotate --inclusive=yes`` gives the cross-check
  (``rank_sort_cpu``'s inclusive count) and the torch methods called from Python.

Usage::

    python3 -m bench.profile_cpu [--shapes vitpose simcc] [--regimes init trained]
    python3 -m bench.profile_cpu --callgrind [--batch 8] [--jobs 2] [--reuse]

The kernel code is not changed: the phases are source ranges of csrc/ found by markers
(:data:`RANGES`), so the attribution follows the code as it is.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
DEFAULT_BUILD = Path(tempfile.gettempdir()) / "rk-prof"
SHAPE_NAMES = ("vitpose", "hires", "large", "simcc")
REGIME_NAMES = ("init", "trained")

# Phases, in report order. "kernel" phases are inside rank_sort_cpu; the last three are the
# rest of the fwd+bwd call.
PHASES = (
    ("l1", "L pass 1: positives, s_min"),
    ("l2", "L pass 2: prune + compact negatives"),
    ("choice", "kept pass: finite/span check + cost model"),
    ("zero", "gradient zeroing (memset over L)"),
    ("alloc", "workspace: std::vector alloc/zero-fill, item lists"),
    ("book", "per-row bookkeeping (npos, poff, py/pw, row means)"),
    ("pa", "pairwise pass A (tiles)"),
    ("pb", "pairwise pass B (tiles)"),
    ("pbs", "pairwise pass B: gradient scatter"),
    ("bscr", "bucketed: scratch set-up (sized/zeroed)"),
    ("bsort", "bucketed: sorts (by score, by label)"),
    ("bsearch", "bucketed: keys, positives' buckets, suffix sums"),
    ("bneg", "bucketed: negatives' bucket search + histogram"),
    ("bfen", "bucketed: Fenwick sweeps + coefficients"),
    ("bgrad", "bucketed: gradient (alpha/beta, positives)"),
    ("bind", "pybind11 binding / params (in _C)"),
    ("torch", "torch ops (libtorch*, self)"),
    ("py", "Python, libc, other (outside the kernel)"),
)
KERNEL = ("l1", "l2", "choice", "zero", "alloc", "book", "pa", "pb", "pbs", "bscr", "bsort",
          "bsearch", "bneg", "bfen", "bgrad")

# Source ranges: file -> [(first line's marker, phase)], each range running to the next
# marker (or the file's end). The phase None means "decided by the enclosing function".
RANGES = {
    "rank_sort_cpu.cpp": [
        ("#include", None),
        ("const T nf = T(n);", "pbs"),
        ("struct RowPrep {", "book"),
        ("RowPrep prep_row(", "l1"),
        ("int32_t nn = 0;", "l2"),
        ("// What the cost model and step_cpu need", "choice"),
        ("template <typename T, int MODE>", None),
    ],
    "rank_sort_bucketed_cpu.h": [
        ("#pragma once", "bscr"),
        ("// Longest run of keys in one table bin", "bneg"),   # bucket_scan, inlined
        ("void row_impl(", "bscr"),
        ("// 1. Sort the positives", "bsort"),
        ("// Scores relative to the median", "bsearch"),
        ("double* ns = zeroed(S.neg_suf", "bneg"),
        ("double* ps = zeroed(S.pos_suf", "bsearch"),
        ("// 3. Label-conditioned sums", "bfen"),
        ("// 5a. Negatives", "bgrad"),
        ("}  // namespace bucketed_detail", "bscr"),
    ],
    "rank_sort_bucketed_math.h": [
        ("#pragma once", "bfen"),
        ("// Breakpoint keys", "bsearch"),
        # bucket_of / bucket_lookup / bucket_table, inlined: counted with the negatives'
        # search (a row looks up n positives and ñ ≫ n negatives)
        ("// Bucket of a score among", "bneg"),
        ("// Fenwick tree of K doubles", "bfen"),
        ("// Fixed point for sums", "bfen"),
        ("RS_HD bool prefers_bucketed", "choice"),
    ],
}
SORT_HEADERS = ("stl_algo.h", "stl_heap.h", "predefined_ops.h", "stl_algobase.h")


def _line_ranges():
    """{file basename: [(first line, phase)]} from :data:`RANGES` and the sources."""
    out = {}
    for name, marks in RANGES.items():
        path = next(CSRC.rglob(name))
        lines = path.read_text().splitlines()
        found, start = [], 0
        for mark, phase in marks:
            at = next((i for i in range(start, len(lines)) if mark in lines[i]), None)
            if at is None:
                raise SystemExit(f"profile_cpu: marker {mark!r} not found in {path}")
            found.append((at + 1, phase))
            start = at + 1
        out[name] = found
    return out


def _range_phase(ranges, base, line):
    phase = None
    for first, ph in ranges.get(base, ()):
        if line >= first:
            phase = ph
    return phase


def classify(fn, path, line, ranges, grad_line):
    """The phase of a cost in ``_C``'s function ``fn`` at ``path:line``.

    Args:
        fn: the (demangled) function the cost is in (inlined code: the outer function).
        path: the source file of the line (inlined code: the inlined header).
        line: the line number (0: unknown).
        ranges: :func:`_line_ranges`.
        grad_line: the line of ``std::memset(grad`` in rank_sort_cpu.cpp.

    Returns:
        A key of :data:`PHASES`.
    """
    base = os.path.basename(path or "")
    head = fn.replace("(anonymous namespace)", "anon").split("(")[0]
    if "bucketed_detail" in fn and not re.match(r"(\S+ )?rspose::", head):
        return "bsort"  # std::sort's instantiations on row_impl's comparators
    if head.startswith("std::") or " std::" in head:
        return "alloc"  # std::vector's out-of-line members (resize, emplace_back)
    if "rspose::" not in head or "pybind11" in head:
        return "bind"  # pybind11, bindings.cpp (validate_params, cpu_entry)
    if "pass_a_block" in head:
        return "pa"
    if "pass_b_block" in head:
        return "pbs" if _range_phase(ranges, base, line) == "pbs" else "pb"
    if "bucketed_detail" in fn or "bucketed_row" in head:
        if base in SORT_HEADERS:
            return "bsort"  # the parts of std::sort inlined into row_impl
        if base in ("rank_sort_bucketed_cpu.h", "rank_sort_bucketed_math.h"):
            return _range_phase(ranges, base, line) or "bscr"
        if base == "rank_sort_math.h":
            return "bfen"  # finish_identity / finish_exact / store_coef
        return "bscr"  # std::vector (sized, zeroed) and the rest
    # run<T, MODE>, its lambdas, prep_row, rank_sort_cpu, dispatch_dtype_mode
    if base == "rank_sort_cpu.cpp":
        if line == grad_line:
            return "zero"
        return _range_phase(ranges, base, line) or "book"
    if base == "rank_sort_math.h":
        return "l2" if _prunable_line(line) else "l1"
    if base == "rank_sort_bucketed_math.h":
        return "choice"
    if base.startswith("stl_") or base in ("new_allocator.h", "alloc_traits.h", "vector.tcc",
                                           "allocator.h", "move.h"):
        return "alloc"
    return "book"


_PRUNABLE = None


def _prunable_line(line):
    """Whether rank_sort_math.h's ``line`` is in ``prunable`` (else: ``nan_min`` and the rest,
    which prep's first pass uses)."""
    global _PRUNABLE
    if _PRUNABLE is None:
        lines = (CSRC / "rank_sort_math.h").read_text().splitlines()
        at = next(i for i, t in enumerate(lines) if "bool prunable(" in t) + 1
        _PRUNABLE = range(at - 1, at + 3)
    return line in _PRUNABLE


# ---------------------------------------------------------------------------------------------
# The raw callgrind format (valgrind's docs, "Callgrind Format Specification").


def parse_callgrind(path, our_obj):
    """Self costs per (function, file, line) and costs of calls leaving ``our_obj``.

    Args:
        path: a callgrind.out file written with ``--dump-instr=yes`` (positions instr line).
        our_obj: a substring of the object path of ``_C``.

    Returns:
        ``(ours, calls_out, by_obj)``: ``ours`` {(fn, file, line): Ir} of functions in
        ``_C``; ``calls_out`` {(fn, file, line, callee): Ir inclusive} of calls from ``_C``
        to other objects; ``by_obj`` {object: self Ir}.
    """
    names = {"ob": {}, "fl": {}, "fn": {}}
    kind_of = {"ob": "ob", "cob": "ob", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl",
               "cfl": "fl", "fn": "fn", "cfn": "fn"}
    fn_obj = {}
    ours = defaultdict(int)
    calls_out = defaultdict(int)
    by_obj = defaultdict(int)
    ob = fl = fi = fn = ""
    cob = cfn = None
    pending_call = False
    last = [0, 0]
    npos = 2
    name_re = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def name(kind, value):
        m = name_re.match(value)
        if not m:
            return value
        table = names[kind_of[kind]]
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), value)

    def positions(tokens):
        out = []
        for i in range(npos):
            t = tokens[i] if i < len(tokens) else "*"
            if t == "*":
                v = last[i]
            elif t[0] in "+-":
                v = last[i] + int(t, 0) if not t[1:].startswith("0x") else \
                    last[i] + int(t[0] + str(int(t[1:], 16)))
            else:
                v = int(t, 0)
            last[i] = v
            out.append(v)
        return out

    with open(path, errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line or line[0] == "#":
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                tokens = line.split()
                pos = positions(tokens)
                cost = int(tokens[npos]) if len(tokens) > npos else 0
                if pending_call:
                    pending_call = False
                    callee_obj = cob if cob is not None else fn_obj.get(cfn, ob)
                    if our_obj in ob and our_obj not in callee_obj:
                        calls_out[(fn, fi, pos[1], cfn)] += cost
                    cob = cfn = None
                    continue
                by_obj[ob] += cost
                if our_obj in ob:
                    ours[(fn, fi, pos[1])] += cost
                continue
            key, _, value = line.partition("=")
            if key == "positions":
                npos = len(value.split())
                last = [0] * npos
            elif key == "ob":
                ob = name("ob", value)
            elif key == "fl":
                fl = fi = name("fl", value)
            elif key in ("fi", "fe"):
                fi = name(key, value)
            elif key == "fn":
                fn = name("fn", value)
                fn_obj.setdefault(fn, ob)
                fi = fl
            elif key == "cob":
                cob = name("cob", value)
            elif key in ("cfi", "cfl"):
                name(key, value)
            elif key == "cfn":
                cfn = name("cfn", value)
            elif key == "calls":
                pending_call = True
    return ours, calls_out, by_obj


def inclusive_totals(out_file, patterns):
    """Inclusive Ir of the functions matching each pattern, from ``callgrind_annotate``.

    Args:
        out_file: the callgrind.out file.
        patterns: {label: regex on the function name}.

    Returns:
        {label: Ir} (the largest matching row; 0 when none matches).
    """
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                           out_file], capture_output=True, text=True, check=True).stdout
    found = dict.fromkeys(patterns, 0)
    row = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$")
    for line in text.splitlines():
        m = row.match(line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        fn = m.group(2)
        for label, pat in patterns.items():
            if re.search(pat, fn) and ir > found[label]:
                found[label] = ir
    return found


def python_ops(out_file, top=5):
    """The torch methods called from Python (``THPVariable_*``, inclusive) and the autograd
    engine's backward, largest first: where "torch ops" goes (an op called inside backward
    is in both its own row and the engine's).

    Returns:
        ``[(name, Ir)]``, at most ``top`` of them.
    """
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                           out_file], capture_output=True, text=True, check=True).stdout
    found = {}
    row = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+\S*?:(.*)$")
    for line in text.splitlines():
        m = row.match(line)
        if not m:
            continue
        ir, fn = int(m.group(1).replace(",", "")), m.group(2)
        op = re.match(r"(?:\S+ )?torch::autograd::THPVariable_(\w+)\(", fn)
        if op:
            found[op.group(1)] = max(found.get(op.group(1), 0), ir)
        elif fn.startswith("torch::autograd::Engine::execute("):
            found["backward (engine)"] = max(found.get("backward (engine)", 0), ir)
    return sorted(found.items(), key=lambda kv: -kv[1])[:top]


def summary_ir(out_file):
    """The ``summary:`` (total Ir) of a callgrind output part."""
    with open(out_file) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise ValueError(f"{out_file}: no summary line")


def attribute(out_file, so_path):
    """Instruction counts of the profiled cpu call per phase.

    Args:
        out_file: the callgrind output of a :func:`worker` run: ``out_file.1`` holds the
            cpu call, ``out_file.2`` the MSE call (one client-request dump each).
        so_path: the profiled ``_C`` (its name identifies its object in the output).

    Returns:
        ``({phase: Ir}, {"cpu": Ir of the cpu call, "mse": of the MSE call, "kernel":
        rank_sort_cpu's inclusive Ir})``.
    """
    cpu_file, mse_file = f"{out_file}.1", f"{out_file}.2"
    ranges = _line_ranges()
    src = (CSRC / "cpu" / "rank_sort_cpu.cpp").read_text().splitlines()
    grad_line = next(i for i, t in enumerate(src) if "std::memset(grad" in t) + 1
    ours, calls_out, by_obj = parse_callgrind(cpu_file, os.path.basename(so_path))
    phase = defaultdict(int)
    for (fn, path, line), ir in ours.items():
        phase[classify(fn, path, line, ranges, grad_line)] += ir
    for (fn, path, line, _callee), ir in calls_out.items():
        phase[classify(fn, path, line, ranges, grad_line)] += ir
    totals = dict(cpu=summary_ir(cpu_file), mse=summary_ir(mse_file))
    totals["kernel"] = inclusive_totals(cpu_file, {"k": r"(^|:)rspose::rank_sort_cpu\("})["k"]
    # Nothing in _C calls torch: libtorch's self cost is all outside the kernel.
    phase["torch"] = sum(v for k, v in by_obj.items() if "libtorch" in os.path.basename(k))
    inside = sum(phase[k] for k in KERNEL) + phase["bind"]
    phase["py"] = max(0, totals["cpu"] - inside - phase["torch"])
    totals["ops"] = python_ops(cpu_file)
    return dict(phase), totals


# ---------------------------------------------------------------------------------------------
# Cases, timing, statistics.


def _setup_torch(threads=1):
    import torch
    torch.set_num_threads(threads)
    return torch


def load_debug_module(so_path):
    """Make ``rspose_kernels._C`` the module at ``so_path`` (before rspose_kernels loads it)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("rspose_kernels._C", so_path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rspose_kernels._C"] = mod
    spec.loader.exec_module(mod)
    return mod


def build_case(shape, regime, batch=None):
    """The benchmark case and its two providers (cpu auto, MSE)."""
    from bench.cases import make_case
    from bench.providers import backend_provider, mse_provider
    case = make_case(shape, regime, batch=batch)
    return case, backend_provider(case, "cpu"), mse_provider(case)


def once(provider):
    """One forward + backward of ``provider`` (gradients cleared first)."""
    for t in provider.leaves:
        t.grad = None
    provider.fn().backward()


def row_stats(case):
    """Positives and kept negatives per non-empty row, and the rows the plan buckets.

    Returns:
        dict with rows, nonempty, L (a list for SimCC's two axes), pos, kept (means over
        non-empty rows), bucketed, use_a / use_b (real pairs n·(n + kept) over the SIMD lanes
        the pairwise passes A / B evaluate, if every row went pairwise).
    """
    import torch

    from rspose_kernels import dispatch
    from rspose_kernels.losses import DEFAULT_DELTA
    plan = dispatch.backend_record("cpu").bucketed_plan
    rows = nonempty = bucketed = 0
    pos = kept = real = lanes_a = lanes_b = 0.0
    lengths = []
    for scores, labels in case.groups:
        s, y = scores.double(), labels.double()
        p = y > case.pos_thr
        n = p.sum(1)
        smin = torch.where(p, s, torch.full_like(s, float("inf"))).amin(1, keepdim=True)
        k = ((~p) & ~(s < smin - DEFAULT_DELTA)).sum(1)
        live = n > 0
        nl, kl = n[live].double(), k[live].double()
        real += float((nl * (nl + kl)).sum())
        # pass A: blocks of BP = 64 positives, each padded to a multiple of VL = 8 lanes;
        # pass B: blocks of at most BE = 256 elements (negatives, then positives), each
        # padded to 8 lanes (csrc/cpu/rank_sort_cpu.cpp; before issue 23's kernel changes:
        # 16 and always 256). Rows the plan buckets are counted too.
        def pad(count, block):
            return (count / block).floor() * block + ((count % block) / 8).ceil() * 8
        lanes_a += float((pad(nl, 64) * (nl + kl)).sum())
        lanes_b += float((nl * (pad(kl, 256) + pad(nl, 256))).sum())
        rows += s.shape[0]
        nonempty += int(live.sum())
        pos += float(n[live].sum())
        kept += float(k[live].sum())
        bucketed += int(plan(scores, labels, DEFAULT_DELTA, case.pos_thr, "auto").sum())
        lengths.append(s.shape[1])
    d = max(nonempty, 1)
    return dict(rows=rows, nonempty=nonempty, L=lengths, pos=pos / d, kept=kept / d,
                bucketed=bucketed, use_a=real / max(lanes_a, 1), use_b=real / max(lanes_b, 1))


def time_fn(fn, min_time=0.5, min_reps=5, max_reps=200):
    """Median process time (ms) of ``fn()``, after one warm-up call."""
    fn()
    times = []
    start = time.process_time()
    while len(times) < max_reps and (len(times) < min_reps
                                     or time.process_time() - start < min_time):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1e3)
    return statistics.median(times)


def kernel_and_check_fns(case):
    """``(kernel, check)``: the native kernel alone on the case's rows (forward with the
    gradient, what the loss's forward calls per group), and the loss's label-range check
    (``checks.labels_in_unit_range``) on the same labels."""
    from rspose_kernels import checks
    from rspose_kernels.backends import native
    from rspose_kernels.losses import DEFAULT_DELTA

    def kernel():
        for scores, labels in case.groups:
            native._rank_sort_cpu(scores, labels, DEFAULT_DELTA, case.pos_thr, False, True,
                                  "auto")

    def check():
        for _, labels in case.groups:
            checks.labels_in_unit_range("labels", labels)
    return kernel, check


def timing_table(shapes, regimes, min_time):
    """Markdown rows of the timing table (printed as they come)."""
    torch = _setup_torch(1)
    print(f"load average {_load()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread; process time, median", flush=True)
    print("| shape | regime | L | rows (non-empty) | pos/row | kept neg/row | bucketed | "
          "lanes used A / B | cpu ms | MSE ms | cpu/MSE | kernel alone ms | label check ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        for regime in regimes:
            case, cpu, mse = build_case(shape, regime)
            st = row_stats(case)
            t_cpu = time_fn(lambda: once(cpu), min_time)
            t_mse = time_fn(lambda: once(mse), min_time)
            kernel, check = kernel_and_check_fns(case)
            t_kernel, t_check = time_fn(kernel, min_time / 2), time_fn(check, min_time / 2)
            lens = "+".join(str(v) for v in st["L"])
            print(f"| {shape} | {regime} | {lens} | {st['rows']} ({st['nonempty']}) | "
                  f"{st['pos']:.1f} | {st['kept']:.1f} | {st['bucketed']}/{st['nonempty']} | "
                  f"{100 * st['use_a']:.0f} % / {100 * st['use_b']:.0f} % | "
                  f"{t_cpu:.2f} | {t_mse:.2f} | {t_cpu / t_mse:.1f}x | {t_kernel:.2f} | "
                  f"{t_check:.2f} |", flush=True)


# ---------------------------------------------------------------------------------------------
# Callgrind.

_MARKER_C = r"""
#include <valgrind/callgrind.h>
void rk_prof_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void rk_prof_begin(void) { CALLGRIND_ZERO_STATS; }
void rk_prof_end(void) { CALLGRIND_DUMP_STATS; }
"""


def build_debug(build_dir):
    """Builds ``_C`` with debug info (RelWithDebInfo: ``-O2 -g`` before the target's own
    ``-O3 ...``, so the code is the Release build's) and the marker library, out of tree.

    Returns:
        ``(path of _C*.so, path of the marker library)``.
    """
    build_dir = Path(build_dir)
    out = build_dir / "out"
    sos = sorted(out.glob("_C*.so"))
    if not sos:
        import pybind11
        cmake = shutil.which("cmake")
        subprocess.check_call([
            cmake, f"-S{ROOT}", f"-B{build_dir / 'build'}", "-GNinja",
            "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DRSPOSE_CUDA=OFF",
            f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DRSPOSE_OUTPUT_DIR={out}"])
        subprocess.check_call([cmake, "--build", str(build_dir / "build")])
        sos = sorted(out.glob("_C*.so"))
    marker = build_dir / "librk_prof_marker.so"
    if not marker.exists():
        src = build_dir / "rk_prof_marker.c"
        src.write_text(_MARKER_C)
        subprocess.check_call(["cc", "-O0", "-fno-optimize-sibling-calls", "-shared", "-fPIC",
                               "-g", "-o", str(marker), str(src)])
    return str(sos[0]), str(marker)


def worker(shape, regime, batch, so_path, marker_path):
    """The child under valgrind: warm up, then one collected call of cpu and of MSE."""
    import ctypes
    _setup_torch(1)
    load_debug_module(so_path)
    lib = ctypes.CDLL(marker_path)
    case, cpu, mse = build_case(shape, regime, batch)
    once(cpu)
    once(mse)
    st = row_stats(case)
    print(f"STATS {st['rows']} {st['nonempty']} {st['pos']:.2f} {st['kept']:.2f} "
          f"{st['bucketed']}", flush=True)
    lib.rk_prof_start()
    for p in (cpu, mse):  # part 1: the cpu call, part 2: the MSE call
        lib.rk_prof_begin()
        once(p)
        lib.rk_prof_end()
    sys.stdout.flush()
    os._exit(0)  # no teardown under the instrumentation


def callgrind_case(shape, regime, batch, so_path, marker_path, keep_dir, reuse=False):
    """Runs :func:`worker` under callgrind; returns its attribution and row statistics.

    With ``reuse``, the outputs of an earlier run in ``keep_dir`` are parsed again instead.
    """
    out_file = os.path.join(keep_dir, f"callgrind.{shape}.{regime}.b{batch}.out")
    cmd = ["valgrind", "--tool=callgrind", "--dump-instr=yes", "--instr-atstart=no",
           f"--callgrind-out-file={out_file}",
           sys.executable, "-m", "bench.profile_cpu", "--worker", shape, regime, str(batch),
           so_path, marker_path]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.time()
    stats_file = out_file + ".stats"
    reused = reuse and os.path.exists(stats_file)
    if not reused:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"{shape}/{regime}: valgrind failed:\n{res.stderr[-3000:]}")
        with open(stats_file, "w") as f:
            f.write(next(line for line in res.stdout.splitlines() if line.startswith("STATS")))
    with open(stats_file) as f:
        stats = f.read().split()[1:]
    phase, totals = attribute(out_file, so_path)
    return dict(shape=shape, regime=regime, batch=batch, phase=phase, totals=totals,
                stats=stats, wall=None if reused else time.time() - t0, out=out_file)


def callgrind_table(results):
    """Markdown: per case the instruction counts and the per-phase split (%)."""
    lines = []
    head = "| phase | " + " | ".join(f"{r['shape']} {r['regime']}" for r in results) + " |"
    lines.append(head)
    lines.append("|---|" + "---|" * len(results))

    def row(label, cells):
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    splits = [r["phase"] for r in results]
    row("batch (of the shape's)", [str(r["batch"]) for r in results])
    row("rows (non-empty)", [f"{r['stats'][0]} ({r['stats'][1]})" for r in results])
    row("pos / kept neg per row", [f"{float(r['stats'][2]):.1f} / {float(r['stats'][3]):.1f}"
                                   for r in results])
    row("rows bucketed", [f"{r['stats'][4]}/{r['stats'][1]}" for r in results])
    row("cpu call, Mi instr", [f"{r['totals']['cpu'] / 1e6:.1f}" for r in results])
    row("MSE call, Mi instr", [f"{r['totals']['mse'] / 1e6:.1f}" for r in results])
    row("cpu / MSE instr", [f"{r['totals']['cpu'] / max(r['totals']['mse'], 1):.1f}x"
                            for r in results])
    row("rank_sort_cpu incl., % of call", [f"{100 * r['totals']['kernel'] / r['totals']['cpu']:.1f}"
                                           for r in results])
    row("instr per element (kernel)", [
        f"{r['totals']['kernel'] / (int(r['stats'][0]) * _row_len(r['shape'])):.1f}"
        for r in results])
    for key, label in PHASES:
        row(label, [f"{100 * s.get(key, 0) / max(r['totals']['cpu'], 1):.1f}"
                    for s, r in zip(splits, results)])
    row("torch methods, Mi instr incl.", ["<br>".join(
        f"{name} {ir / 1e6:.1f}" for name, ir in r["totals"]["ops"]) for r in results])
    row("sum of phases, % (check)", [
        f"{100 * sum(s.get(k, 0) for k, _ in PHASES) / max(r['totals']['cpu'], 1):.1f}"
        for s, r in zip(splits, results)])
    return "\n".join(lines)


def _load():
    return " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"


def _row_len(shape):
    from rspose_kernels.testing import SHAPES
    _, _, h, w, _ = SHAPES[shape]
    return (h + w) / 2 if shape == "simcc" else h * w


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPE_NAMES), choices=SHAPE_NAMES)
    ap.add_argument("--regimes", nargs="+", default=list(REGIME_NAMES), choices=REGIME_NAMES)
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="timing: seconds of process time per provider at least")
    ap.add_argument("--callgrind", action="store_true",
                    help="instruction counts per phase instead of the timing table")
    ap.add_argument("--batch", type=int, default=None,
                    help="callgrind: first BATCH items of each case (default: the whole case)")
    ap.add_argument("--jobs", type=int, default=1, help="callgrind: cases run at once")
    ap.add_argument("--reuse", action="store_true",
                    help="callgrind: parse the outputs an earlier run left in the build dir")
    ap.add_argument("--build-dir", default=str(DEFAULT_BUILD),
                    help="callgrind: where the debug-info _C is built (default %(default)s)")
    ap.add_argument("--worker", nargs=5, metavar=("SHAPE", "REGIME", "BATCH", "SO", "MARKER"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        shape, regime, batch, so_path, marker = args.worker
        worker(shape, regime, int(batch) if int(batch) > 0 else None, so_path, marker)
        return
    if not args.callgrind:
        timing_table(args.shapes, args.regimes, args.min_time)
        return
    so_path, marker = build_debug(args.build_dir)
    keep = os.path.join(args.build_dir, "callgrind")
    os.makedirs(keep, exist_ok=True)
    if not args.reuse:
        for old in glob.glob(os.path.join(keep, "callgrind.*.out*")):
            os.remove(old)
    from rspose_kernels.testing import SHAPES
    jobs = [(s, r, min(args.batch, SHAPES[s][0]) if args.batch else SHAPES[s][0])
            for s in args.shapes for r in args.regimes]
    print(f"load average {_load()}; _C with debug info: {so_path}", flush=True)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(
            lambda j: callgrind_case(*j, so_path, marker, keep, args.reuse), jobs))
    for r in results:
        took = "reused" if r["wall"] is None else f"{r['wall']:.0f} s under valgrind"
        print(f"# {r['shape']} {r['regime']} batch {r['batch']}: {took}, {r['out']}", flush=True)
    print(callgrind_table(results))


if __name__ == "__main__":
    main()
