"""Ahead-of-time compiles of every GPU kernel for sm_80 and sm_90, on a machine without a GPU.

Triton: the real launcher (``triton_backend.rank_sort_rows`` and ``row_stats``) runs on empty
CPU tensors at the benchmark shapes (docs/DESIGN.md §8), every dtype and mode, with its three
kernels replaced by recorders, so nothing is launched and every launch argument is the
launcher's own. Each launch is then specialised exactly as Triton's JIT would specialise it on
the GPU (its own binder: dtypes, 16-byte alignment, integers equal to 1 or divisible by 16),
deduplicated, and compiled by the real compiler (``triton.compile(ASTSource(...),
target=GPUTarget(...))``, PTX and ptxas) for each target. The SM count, which sets the
launcher's programs per row, is the target's (A100: 108, H100/H200: 132). Resources are read
from Triton's own ptxas report (``TRITON_DUMP_PTXAS_LOG``): registers, stack frame, spills;
shared memory is Triton's allocation plus ptxas' static count. A fresh cache directory per run,
so every kernel really goes through ptxas.

CUDA: ``csrc/cuda/rank_sort_cuda.cu`` compiled by nvcc with ``-Xptxas -v`` for both targets
(the flags of CMakeLists.txt), the ptxas report parsed per kernel, and each kernel's block
size read from its ``.maxntid`` (``__launch_bounds__``) in the PTX.

Needs the Triton interpreter off (TRITON_INTERPRET unset before triton is imported): run
as a script, ``python3 tests/gpu_resources.py --json out.json`` (what tests/test_gpu_compile.py
does, in a subprocess), or ``--markdown`` for the table of docs/GPU_RESOURCES.md.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (compute capability, SMs of the reference card): A100, H100 SXM / H200.
TARGETS = {80: 108, 90: 132}
# Per SM: 64K 32-bit registers on both; the most shared memory one block may use.
REGISTER_FILE = {80: 65536, 90: 65536}
SHARED_LIMIT = {80: 166912, 90: 232448}
MAX_REGISTERS_PER_THREAD = 255

MODES = {  # name -> (delta, exact, need_grad)
    "identity": (0.5, False, True),
    "exact": (0.5, True, True),
    "hard": (0.0, False, True),
    "forward": (0.5, False, False),
    "hard-forward": (0.0, False, False),
}
DTYPES = ("float16", "bfloat16", "float32", "float64")
# Every call is recorded with both: "auto" launches the bucketed kernels as well (the choice
# is the device's, so a launch cannot depend on the data; "bucketed" compiles the same).
ALGORITHMS = ("pairwise", "auto")
TRITON_KERNELS = ("_compact_kernel", "_pass_a_kernel", "_pass_b_kernel")
TRITON_BUCKET_KERNELS = ("_bucket_prep_kernel", "_bucket_search_kernel", "_bucket_scan_kernel",
                         "_bucket_coef_kernel", "_bucket_grad_kernel")


def spec_calls():
    """(what, M, L) of every ``rank_sort_rows`` call the public losses make at the benchmark
    shapes (docs/DESIGN.md §8)."""
    from rspose_kernels.testing import SHAPES
    calls = []
    for name, (b, k, h, w, _sigma) in SHAPES.items():
        if name == "simcc":
            calls += [(f"{name}-x", b * k, w), (f"{name}-y", b * k, h)]
        else:
            calls.append((name, b * k, h * w))
        calls.append((f"{name}-instance", 1, b * k))   # Instance-Sort: one row of B·K items
    return calls


# ----------------------------------------------------------------------------- Triton

def record_triton_launches(sms: int):
    """Every launch the launcher makes at the benchmark calls, dtypes and modes, on ``sms`` SMs."""
    import torch

    import rspose_kernels.backends.triton_backend as tk
    import rspose_kernels.backends.triton_bucketed as tb
    from rspose_kernels.backends import accumulation_dtype

    if tk._INTERPRETED:
        raise RuntimeError("TRITON_INTERPRET is on: the kernels are not JIT functions")
    launches = []
    stand_in = {}

    def small(a):
        # A launch's tensors specialise by dtype and 16-byte alignment only (every tensor here
        # is a fresh, aligned allocation): keep a one-element one of the same dtype, not the
        # call's [M, L] buffers, so the recorded launches do not hold gigabytes.
        if isinstance(a, torch.Tensor):
            return stand_in.setdefault(a.dtype, torch.empty(1, dtype=a.dtype))
        return a

    class Recorder:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                assert all(a.data_ptr() % 16 == 0 for a in args if isinstance(a, torch.Tensor))
                launches.append((self.fn, tuple(grid), tuple(map(small, args)), kwargs, context))
            return launch

    kernels = [(tk, n) for n in TRITON_KERNELS] + [(tb, n) for n in TRITON_BUCKET_KERNELS]
    saved = {(mod, n): getattr(mod, n) for mod, n in kernels}
    saved_sms = tk._multiprocessors
    try:
        for (mod, n), fn in saved.items():
            setattr(mod, n, Recorder(fn))
        tk._multiprocessors = lambda device: sms
        for what, m, length in spec_calls():
            for dt in DTYPES:
                dtype = getattr(torch, dt)
                s = torch.empty(m, length, dtype=dtype)
                y = torch.empty(m, length, dtype=accumulation_dtype(dtype))
                for mode, (delta, exact, need_grad) in MODES.items():
                    for algorithm in ALGORITHMS:
                        context = f"{what} {dt} {mode} {algorithm}"
                        tk.rank_sort_rows(s, y, delta, 0.0, exact, need_grad, algorithm)
                context = f"{what} {dt} row_stats"
                tk.row_stats(s, y, 0.5, 0.0)
    finally:
        for (mod, n), fn in saved.items():
            setattr(mod, n, fn)
        tk._multiprocessors = saved_sms
    return launches


def triton_launches_per_call(dtype: str, need_grad: bool, algorithm: str) -> int:
    """Kernels one rank_sort_rows call launches: the three pairwise ones, plus (rows that may
    go bucketed: "auto" on a float32 accumulation) the histogram's three and, with a
    gradient, the bucketed negatives' two."""
    if algorithm == "pairwise" or dtype == "float64":
        return 3
    return 6 + (2 if need_grad else 0)


def specialise(launch, target):
    """What Triton's JIT compiles for this launch: (fn, signature, constexprs, attrs, options)."""
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn, grid, args, kwargs, _ = launch
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound,
                                                          specialization, options)
    return fn, signature, constexprs, attrs, options


def variant_key(fn, signature, constexprs, attrs, options):
    return json.dumps([fn.__name__, signature, sorted(map(str, constexprs.items())),
                       sorted(map(str, attrs.items())), sorted(map(str, vars(options).items()))])


_VARIANTS: list = []   # set before the worker pool forks


def _compile_one(i):
    import triton
    from triton.compiler import ASTSource
    fn, signature, constexprs, attrs, options, target = _VARIANTS[i]
    t0 = time.perf_counter()
    log = io.StringIO()
    with contextlib.redirect_stdout(log):   # TRITON_DUMP_PTXAS_LOG=1: ptxas -v, printed
        kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                                options=vars(options))
    (res,) = parse_ptxas(log.getvalue())
    res.update(
        kernel=fn.__name__, arch=target.arch, seconds=round(time.perf_counter() - t0, 2),
        threads=kernel.metadata.num_warps * 32,
        shared=kernel.metadata.shared + res["shared"],
        constexprs={fn.arg_names[k[0]]: v for k, v in constexprs.items()},
        signature={k: v for k, v in signature.items() if v != "constexpr"},
        div_full=kernel.asm["ptx"].count("div.full.f32"))
    return res


def triton_report(jobs: int) -> dict:
    from triton.backends.compiler import GPUTarget

    variants, contexts = {}, {}
    n_launches = 0
    for arch, sms in TARGETS.items():
        target = GPUTarget("cuda", arch, 32)
        for launch in record_triton_launches(sms):
            n_launches += 1
            fn, signature, constexprs, attrs, options = specialise(launch, target)
            key = (arch, variant_key(fn, signature, constexprs, attrs, options))
            variants.setdefault(key, (fn, signature, constexprs, attrs, options, target))
            contexts.setdefault(key, []).append(launch[4])
    _VARIANTS[:] = list(variants.values())
    keys = list(variants)
    t0 = time.perf_counter()
    if jobs > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_compile_one, range(len(keys)), chunksize=1)
    else:
        results = [_compile_one(i) for i in range(len(keys))]
    for key, res in zip(keys, results):
        res["launches"] = len(contexts[key])
        res["example"] = contexts[key][0]
    import triton
    return dict(triton=triton.__version__, launches=n_launches, variants=results,
                seconds=round(time.perf_counter() - t0, 1))


# ----------------------------------------------------------------------------- CUDA

def find_nvcc():
    """The CUDA compiler that built ``rspose_kernels._C``.

    CMakeLists.txt decides whether and with which nvcc the CUDA kernels are built, once;
    this asks the built module (``_C.build_info()``) rather than searching again.

    Returns:
        The compiler's path, or None when ``_C`` is not built or was built without CUDA.
    """
    try:
        from rspose_kernels import _C
    except ImportError:
        return None
    return _C.build_info()["nvcc"] or None


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for 'sm_(\d+)a?'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")


def parse_ptxas(log: str) -> list[dict]:
    """One record per (kernel, arch) of an ``-Xptxas -v`` log."""
    out, cur = [], None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            cur = dict(symbol=m.group(1), arch=int(m.group(2)))
            out.append(cur)
        elif cur and (m := _FRAME.search(line)):
            cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                       spill_loads=int(m.group(3)))
        elif cur and (m := _USED.search(line)):
            cur.update(registers=int(m.group(1)), shared=int(m.group(2) or 0))
    return out


def _demangle(symbols):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return {s: s for s in symbols}
    out = subprocess.run([cxxfilt], input="\n".join(symbols), capture_output=True, text=True)
    return dict(zip(symbols, out.stdout.splitlines()))


def _short_name(demangled: str) -> str:
    # rspose::cuda_detail::pass_a_kernel<__half, float, 2>(...) -> pass_a_kernel<f16, float, exact>
    m = re.search(r"cuda_detail::(\w+)(<[^()]*>)?", demangled)
    if not m:
        return demangled
    args = (m.group(2) or "").replace("__nv_bfloat16", "bf16").replace("__half", "f16")
    args = re.sub(r", (\d)>$", lambda a: ", " + ("smooth", "hard", "exact")[int(a.group(1))] + ">",
                  args)
    return m.group(1) + args


def cuda_report(archs=tuple(TARGETS)) -> dict:
    nvcc = find_nvcc()
    if nvcc is None:
        return dict(nvcc=None, kernels=[])
    with tempfile.TemporaryDirectory() as tmp:
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        cmd = [nvcc, "-c", "-std=c++17", "-O3", "-Werror=all-warnings", f"-I{ROOT / 'csrc'}",
               "-Xptxas", "-v", "--keep", "--keep-dir", tmp, *gencode,
               str(ROOT / "csrc" / "cuda" / "rank_sort_cuda.cu"), "-o", os.path.join(tmp, "k.o")]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"nvcc failed:\n{run.stderr[-6000:]}")
        threads = {}
        for ptx in Path(tmp).glob("*.ptx"):
            arch = int(re.search(r"compute_(\d+)", ptx.name).group(1))
            text = ptx.read_text()
            for m in re.finditer(r"\.entry (\w+)\((.*?)\)\s*((?:\.\w+[^\n]*\n\s*)*)\{", text, re.S):
                mt = re.search(r"\.maxntid (\d+), (\d+), (\d+)", m.group(3))
                threads[(m.group(1), arch)] = (int(mt.group(1)) * int(mt.group(2)) *
                                               int(mt.group(3))) if mt else None
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    kernels = parse_ptxas(run.stderr)
    names = _demangle([k["symbol"] for k in kernels])
    for k in kernels:
        k["kernel"] = _short_name(names[k["symbol"]])
        k["threads"] = threads.get((k["symbol"], k["arch"]))
    return dict(nvcc=re.findall(r"release ([\d.]+)", version)[0], kernels=kernels,
                seconds=round(time.perf_counter() - t0, 1))


# ----------------------------------------------------------------------------- launch shapes

# Instructions per pair evaluation in the innermost loops of the sm_90 SASS (nvcc 13.0, fp32,
# smooth / exact mode): loop instructions ÷ pairs per iteration, counted by hand from
# `cuobjdump -sass`. "before" = csrc/cuda at commit ec142ad (every element got the full
# five-sum update; pass B had 4 elements per thread and shared-memory tiles).
PAIR_INSTR = {
    "before": dict(a_any=18.3, b_any=10.3, a_any_exact=33.5, b_any_exact=12.8),
    "after": dict(a_neg=6.4, a_pos=16.1, b_neg=6.8, b_pos=9.1,
                  a_neg_exact=10.9, a_pos_exact=29.3, b_neg_exact=5.8, b_pos_exact=11.5),
}


def launch_shapes(sms=132) -> str:
    """Pass A / pass B launch sizes and work at the benchmark shapes, before and after
    (markdown)."""
    import torch

    from rspose_kernels import _C
    from rspose_kernels.testing import SHAPES, shape_case

    tuning = _C.CudaTuning()
    tuning.sms = sms
    lines = ["| call | regime | rows × L | positives/row | kept neg./row | pass A CTAs "
             "before → after (items) | pass B CTAs before → after (warp items, split) | pass A+B "
             "Ginstr before → after |", "|---|---|---|---|---|---|---|---|"]
    for name in SHAPES:
        for regime in ("init", "trained"):
            scores, targets, weight = shape_case(name, regime=regime)
            if name == "simcc":
                rows = [(f"{name}-{ax}", s.flatten(0, 1).double(), t.flatten(0, 1).double(),
                         math.exp(-4.5)) for ax, s, t in zip("xy", scores, targets)]
            else:
                rows = [(name, scores.flatten(2).flatten(0, 1).double(),
                         targets.flatten(2).flatten(0, 1).double(), 0.0)]
            for what, s, y, tau in rows:
                lines.append(_shape_row(what, regime, s, y, tau, tuning))
        if name == "vitpose":
            # Instance-Sort: one row of B·K items, all positives (the others score -inf).
            b, k = SHAPES[name][:2]
            s = torch.randn(1, b * k, dtype=torch.float64)
            y = torch.rand(1, b * k, dtype=torch.float64) * 0.999 + 0.001
            lines.append(_shape_row(f"{name}-instance", "init", s, y, 0.0, tuning))
    return "\n".join(lines) + "\n"


def _shape_row(what, regime, s, y, tau, tuning, delta=0.5):
    import torch

    from rspose_kernels import _C
    m, length = s.shape
    pos = y > tau
    n = pos.sum(1)
    smin = torch.where(pos, s, torch.full_like(s, math.inf)).min(1).values
    live = (~pos) & (s >= (smin - delta)[:, None]) & (n > 0)[:, None]
    k = live.sum(1)
    # Before: pass A pruned whole 256-tiles (by the block's lowest positive; the row's is used
    # here, a lower bound), every element of a live tile got the full update.
    pad = (-length) % 256
    tiles = torch.nn.functional.pad((live | pos).float(), (0, pad)).view(m, -1, 256).amax(2)
    old_sweep = (tiles.sum(1) * 256).clamp(max=length)
    bp = 64
    ctas_a_before = m * -(-length // bp)
    items_a = int((-(-n // bp)).sum())
    ctas_b_before = m * -(-length // 1024)
    ctas_a, ctas_b, split = _C.cuda_plan(m, length, _C.FLOAT32, False, tuning)
    items_b = split * int((-(-k // 256) + -(-n // 256)).sum())
    pb, pa = PAIR_INSTR["before"], PAIR_INSTR["after"]
    before = float((n * old_sweep).sum()) * pb["a_any"] + float((n * length).sum()) * pb["b_any"]
    after = (float((n * k).sum()) * (pa["a_neg"] + pa["b_neg"])
             + float((n * n).sum()) * (pa["a_pos"] + pa["b_pos"]))
    return (f"| {what} | {regime} | {m} × {length} | {float(n.double().mean()):.0f} | "
            f"{float(k.double().mean()):.0f} | {ctas_a_before:,} → {ctas_a} ({items_a:,}) | "
            f"{ctas_b_before:,} → {ctas_b} ({items_b:,}, {split}) | "
            f"{before / 1e9:.2f} → {after / 1e9:.2f} |")


# ----------------------------------------------------------------------------- output

def markdown(report: dict) -> str:
    lines = [f"Triton {report['triton']['triton']}: {len(report['triton']['variants'])} "
             f"compiled variants from {report['triton']['launches']} recorded launches.", "",
             "| kernel | arch | threads | registers | regs × threads | shared B | stack B | "
             "spill B | variants |", "|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for v in report["triton"]["variants"]:
        groups.setdefault((v["kernel"], v["arch"], v["threads"]), []).append(v)
    for (name, arch, thr), vs in sorted(groups.items()):
        regs = sorted(v["registers"] for v in vs)
        shared = sorted(v["shared"] for v in vs)
        lines.append(f"| `{name}` | sm_{arch} | {thr} | {regs[0]}–{regs[-1]} | "
                     f"≤ {regs[-1] * thr} | {shared[0]}–{shared[-1]} | "
                     f"{max(v['stack'] for v in vs)} | "
                     f"{max(v['spill_stores'] + v['spill_loads'] for v in vs)} | {len(vs)} |")
    cuda = report["cuda"]
    lines += ["", f"CUDA (nvcc {cuda['nvcc']}, `-O3 -Xptxas -v`):", "",
              "| kernel | arch | threads | registers | regs × threads | shared B | stack | "
              "spill stores/loads |", "|---|---|---|---|---|---|---|---|"]
    for k in sorted(cuda["kernels"], key=lambda k: (k["kernel"], k["arch"])):
        lines.append(f"| `{k['kernel']}` | sm_{k['arch']} | {k['threads']} | {k['registers']} | "
                     f"{k['registers'] * (k['threads'] or 0)} | {k['shared']} | {k['stack']} | "
                     f"{k['spill_stores']}/{k['spill_loads']} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--markdown", action="store_true", help="print the resource tables")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--skip-cuda", action="store_true")
    ap.add_argument("--skip-triton", action="store_true")
    ap.add_argument("--launch-shapes", action="store_true",
                    help="print the CUDA launch sizes at the benchmark shapes (needs _C with CUDA)")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("gpu_resources.py: unset TRITON_INTERPRET (the real compiler is needed)")
    if a.launch_shapes:
        print(launch_shapes())
        return
    # Before triton is imported: a real compile of every kernel (no cache hit), and its log.
    cache = tempfile.mkdtemp(prefix="rspose-triton-cache-")   # ~43 MB: removed at exit
    atexit.register(shutil.rmtree, cache, True)
    os.environ["TRITON_CACHE_DIR"] = cache
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")   # triton 3.9 warns when unset
    report = {}
    # nvcc in the background while Triton compiles (different cores when there are two).
    cuda_proc = None
    if not a.skip_cuda:
        import concurrent.futures
        pool = concurrent.futures.ThreadPoolExecutor(1)
        cuda_proc = pool.submit(cuda_report)
    try:
        import triton  # noqa: F401
    except ImportError:
        a.skip_triton = True
    report["triton"] = None if a.skip_triton else triton_report(a.jobs)
    report["cuda"] = cuda_proc.result() if cuda_proc else None
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    if a.markdown:
        print(markdown(report))


if __name__ == "__main__":
    main()
