"""What the real GPU compilers say about every kernel, checked without a GPU.

tests/gpu_resources.py (run here in a subprocess, since this process has the Triton interpreter
on) records every Triton launch of the real launcher at the benchmark shapes (docs/DESIGN.md
§8), every dtype and mode, compiles each distinct variant with Triton's compiler for sm_80 and
sm_90, and compiles csrc/cuda with nvcc -Xptxas -v for both. These tests hold the results to
what the hardware allows: the compile succeeds, nothing spills (ptxas' own counts; the CUDA
kernels have no stack frame at all), the registers of a block fit the SM's register file (so at
least one block is resident), shared memory stays under the per-block limit, and no float32
division is approximate. The numbers themselves are tabulated in docs/GPU_RESOURCES.md."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import gpu_resources as gr
from tests.reference.parity import require, require_cuda_build

HERE = Path(__file__).resolve().parent

triton = require("triton", "RSPOSE_REQUIRE_TRITON", "triton is not installed")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_resources")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp / "report.json"
    run = subprocess.run([sys.executable, "-m", "tests.gpu_resources", "--json", str(out)],
                         cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-8000:]
    return json.loads(out.read_text())


def _check_fits(k, arch, spill_ok=0):
    where = f"{k['kernel']} sm_{arch} ({k.get('example', '')})"
    assert k["spill_stores"] <= spill_ok and k["spill_loads"] <= spill_ok, f"{where} spills"
    assert k["registers"] <= gr.MAX_REGISTERS_PER_THREAD, where
    assert k["threads"] and k["registers"] * k["threads"] <= gr.REGISTER_FILE[arch], where
    assert k["shared"] <= gr.SHARED_LIMIT[arch], f"{where}: {k['shared']} bytes of shared memory"


def test_every_triton_launch_compiles_for_sm80_and_sm90(report):
    rep = report["triton"]
    # Every (call, dtype, mode, algorithm) and row_stats, recorded once per target, with the
    # kernels each rank_sort_rows call launches and 1 per row_stats call.
    per_call = sum(gr.triton_launches_per_call(dt, need_grad, alg) for dt in gr.DTYPES
                   for _, _, need_grad in gr.MODES.values() for alg in gr.ALGORITHMS)
    per_target = len(gr.spec_calls()) * (per_call + len(gr.DTYPES))
    assert rep["launches"] == per_target * len(gr.TARGETS)
    kinds = {(v["kernel"], v["arch"]) for v in rep["variants"]}
    assert kinds == {(k, a) for k in gr.TRITON_KERNELS + gr.TRITON_BUCKET_KERNELS
                     for a in gr.TARGETS}
    for v in rep["variants"]:
        # One exception, measured: triton 3.6 keeps one 4-byte value of pass A's float64
        # forward (sm_90) in local memory, one store and one load per program, outside the
        # loops (3.9: none). Anything larger, or in float32, fails.
        float64 = v["signature"].get("key_ptr", v["signature"].get("s_ptr")) == "*fp64"
        _check_fits(v, v["arch"], spill_ok=4 if float64 else 0)
        # Exact division everywhere (the interpreter, CPU and CUDA backends divide exactly).
        assert v["div_full"] == 0, f"{v['kernel']} ({v['example']}): div.full.f32 in the PTX"


def test_triton_variants_cover_every_mode_and_dtype(report):
    seen = {(v["kernel"], v["arch"], v["constexprs"].get("EXACT"), v["constexprs"].get("NEED_GRAD"),
             v["constexprs"].get("DELTA_ZERO")) for v in report["triton"]["variants"]}
    for arch in gr.TARGETS:
        for exact, grad, hard in [(False, True, False), (True, True, False), (False, True, True),
                                  (False, False, False), (False, False, True)]:
            for k in ("_pass_a_kernel", "_pass_b_kernel"):
                assert (k, arch, exact, grad, hard) in seen
    score_types = {v["signature"]["s_ptr"] for v in report["triton"]["variants"]
                   if v["kernel"] == "_compact_kernel"}
    assert score_types == {"*fp16", "*bf16", "*fp32", "*fp64"}
    # The bucketed rows' kernels (float32 accumulation only), in every mode they have.
    for arch in gr.TARGETS:
        for exact, hard in [(False, False), (True, False), (False, True)]:
            for k in ("_bucket_scan_kernel", "_bucket_grad_kernel"):
                assert (k, arch, exact, True, hard) in {
                    (v["kernel"], v["arch"], v["constexprs"].get("EXACT"), True,
                     v["constexprs"].get("HARD")) for v in report["triton"]["variants"]}
            assert (("_pass_a_kernel", arch, exact, True, hard) in {
                (v["kernel"], v["arch"], v["constexprs"].get("EXACT"),
                 v["constexprs"].get("BUCKETS"), v["constexprs"].get("DELTA_ZERO"))
                for v in report["triton"]["variants"]})


def test_cuda_kernels_fit_sm80_and_sm90(report):
    rep = report["cuda"]
    require_cuda_build(rep is not None and rep["nvcc"] is not None, "nvcc not found")
    kernels = rep["kernels"]
    names = {k["kernel"] for k in kernels}
    # Every kernel of the launch sequence (rank_sort_launch.cuh), in every score dtype,
    # accumulation dtype and mode, for both targets.
    want = {"plan_kernel"}
    want |= {f"compact_kernel<{dt}>" for dt in ("float, float", "double, double",
                                                "f16, float", "bf16, float")}
    for acc in ("float", "double"):
        want.add(f"rows_kernel<{acc}>")
        for mode in ("smooth", "hard", "exact"):
            want |= {f"{k}_kernel<{acc}, {mode}>" for k in ("pass_a", "pass_b", "finish")}
        # The bucketed rows' kernels (rank_sort_bucketed_kernels.cuh): per accumulation type,
        # and per grad mode where the arithmetic differs.
        want |= {f"bucket_{k}_kernel<{acc}>" for k in ("sort", "search", "grad")}
        want |= {f"bucket_{k}_kernel<{acc}, {e}>" for k in ("scan", "coef")
                 for e in ("false", "true")}
    assert names == want
    assert {k["arch"] for k in kernels} == set(gr.TARGETS)
    assert len(kernels) == len(names) * len(gr.TARGETS)
    for k in kernels:
        _check_fits(k, k["arch"])
        assert k["stack"] == 0, k
        assert k["shared"] <= 48 * 1024, k          # static shared memory


def test_ptxas_log_parser():
    log = """ptxas info    : Compiling entry function '_ZN6rspose3fooEv' for 'sm_90'
ptxas info    : Function properties for _ZN6rspose3fooEv
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 97 registers, used 1 barriers, 2592 bytes smem, 440 bytes cmem[0]
"""
    assert gr.parse_ptxas(log) == [dict(symbol="_ZN6rspose3fooEv", arch=90, stack=16,
                                        spill_stores=8, spill_loads=4, registers=97,
                                        shared=2592)]
