#!/usr/bin/env bash
# One-call validation on a lent GPU machine (H100/H200; no network), from the repo root:
#   nvidia-smi summary -> build with CUDA -> backends present -> whole test suite on CUDA ->
#   compute-sanitizer memcheck + racecheck over the CUDA kernel tests -> full benchmark.
# Every step is time-boxed so that the whole script ends within RSPOSE_CHECK_BUDGET seconds
# (default 560, under the 10-minute call); a failing step is recorded and the next one runs;
# the exit status is 1 if any step failed or timed out. Logs and results go to
# bench/results/gpu_check_<stamp>/ and, when $OUT is set, to $OUT (at most 8 files: summary,
# this run's result rows, the plot, four logs and a tarball of all logs).
# The GPU machine has no .git: pass the commit, e.g.
#   RSPOSE_GIT_COMMIT=$(git rev-parse --short=10 HEAD) bash bench/gpu_check.sh
# It never changes GPU settings (clocks, persistence, power): it measures the card as found.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
BUDGET=${RSPOSE_CHECK_BUDGET:-560}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOGDIR=bench/results/gpu_check_$STAMP
RESULTS=bench/results/results.csv
mkdir -p "$LOGDIR"

export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# Triton must compile for the GPU here, never the interpreter (tests/conftest.py picks it only without a GPU).
export TRITON_INTERPRET=0
# Only the card at hand: halves the CUDA build time (SPEC's default is "80;90").
export RSPOSE_CUDA_ARCHS=${RSPOSE_CUDA_ARCHS:-90}

STEPS=() STATUS=() SECS=()
FAILED=0

elapsed() { echo "$SECONDS"; }

# step NAME CAP RESERVE CMD...: run CMD under `timeout`, for at most CAP seconds and never into
# the RESERVE seconds kept for the steps after it (both planned for 560 s, scaled to BUDGET);
# the log is $LOGDIR/NAME.log.
step() {
  local name=$1 cap=$(( $2 * BUDGET / 560 )) reserve=$(( $3 * BUDGET / 560 )); shift 3
  local left=$(( BUDGET - $(elapsed) - reserve ))
  local limit=$(( cap < left ? cap : left ))
  local log="$LOGDIR/$name.log" t0=$SECONDS rc status
  if (( limit < 5 )); then
    echo "== $name: skipped, no time left in the ${BUDGET}s budget" | tee "$log"
    STEPS+=("$name") STATUS+=("SKIPPED (no time)") SECS+=(0)
    FAILED=1
    return
  fi
  echo "== $name (limit ${limit}s): $*" | tee "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT (${limit}s)"; FAILED=1 ;;
    5) status="FAIL (rc 5: no tests ran)"; FAILED=1 ;;
    *) status="FAIL (rc $rc)"; FAILED=1 ;;
  esac
  echo "== $name: $status in $(( SECONDS - t0 ))s" | tee -a "$log"
  STEPS+=("$name") STATUS+=("$status") SECS+=($(( SECONDS - t0 )))
}

# skip NAME WHY: a step that cannot run here (recorded, not a failure).
skip() {
  echo "== $1: skipped: $2" | tee "$LOGDIR/$1.log"
  STEPS+=("$1") STATUS+=("skipped: $2") SECS+=(0)
}

gpu_info() {
  # Read-only queries.
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit --format=csv
  nvidia-smi
  nvcc --version || echo "nvcc not on PATH"
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  "$PY" -c "import triton; print('triton', triton.__version__)"
}

build() {
  # No network: no build isolation, no dependency resolution.
  if RSPOSE_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e .; then
    return 0
  fi
  echo "pip install failed; falling back to: setup.py build_ext --inplace"
  RSPOSE_CUDA=1 "$PY" setup.py build_ext --inplace
}

backends() {
  "$PY" - <<'EOF'
import rspose_kernels as rk
cuda, cpu = rk.available_backends("cuda"), rk.available_backends("cpu")
print("backends on cuda:", cuda, "| on cpu:", cpu)
missing = [b for b in ("cuda", "triton") if b not in cuda]
if missing:
    raise SystemExit(f"not available on cuda after a CUDA build: {missing}")
EOF
}

SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
# Only the package's kernels (namespace rspose) are instrumented, so torch's own kernels in the
# tests run at full speed; RSPOSE_SANITIZE_FILTER="" instruments everything.
SANITIZE_FILTER=${RSPOSE_SANITIZE_FILTER-kns=rspose}
sanitize() {
  local filter=()
  [ -n "$SANITIZE_FILTER" ] && filter=(--kernel-name "$SANITIZE_FILTER")
  # No caching allocator, so that every tensor is its own allocation and an overrun is seen.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$1" --error-exitcode 86 \
    --print-limit 50 --target-processes all "${filter[@]}" \
    "$PY" -m pytest -q -x -p no:cacheprovider tests/test_native.py -k cuda
}

bench() {
  # Leave ~30 s of the step's limit for the table and the plot.
  "$PY" bench/run.py --no-progress --plot --deadline $(( $1 > 60 ? $1 - 30 : 30 ))
}

export -f gpu_info build backends sanitize bench
export PY SANITIZER SANITIZE_FILTER

rows_before=$( [ -f "$RESULTS" ] && wc -l < "$RESULTS" || echo 0 )

step gpu_info 30 520 bash -c gpu_info
step build 200 330 bash -c build
step backends 30 320 bash -c backends
# CPU-only files (the CUDA emulation, mmpose, the bench smoke test) already run in CI.
step pytest 200 160 "$PY" -m pytest -q -ra -p no:cacheprovider --durations=10 tests \
  --ignore=tests/test_cuda_emulated.py --ignore=tests/test_mmpose.py --ignore=tests/test_bench.py
if [ ! -f tests/test_native.py ]; then
  skip memcheck "tests/test_native.py not found"
  skip racecheck "tests/test_native.py not found"
elif [ -z "$SANITIZER" ]; then
  skip memcheck "compute-sanitizer not found"
  skip racecheck "compute-sanitizer not found"
else
  step memcheck 75 140 bash -c "sanitize memcheck"
  step racecheck 75 120 bash -c "sanitize racecheck"
fi
BENCH_LIMIT=$(( BUDGET - $(elapsed) - 10 ))
step bench 600 5 bash -c "bench $BENCH_LIMIT"

# This run's result rows alone (the CSV may hold older ones), with the header.
if [ -f "$RESULTS" ]; then
  # run.py starts a fresh file when the old one had another header.
  (( $(wc -l < "$RESULTS") < rows_before )) && rows_before=0
  { head -n 1 "$RESULTS"; tail -n +"$(( rows_before + 1 ))" "$RESULTS" | grep -v '^date,'; } \
    > "$LOGDIR/results_gpu.csv"
fi
PLOT=$(ls -t bench/results/bench_*.png 2>/dev/null | head -n 1)

{
  printf '%-10s  %-28s  %7s\n' step status seconds
  for i in "${!STEPS[@]}"; do
    printf '%-10s  %-28s  %7s\n' "${STEPS[$i]}" "${STATUS[$i]}" "${SECS[$i]}"
  done
  printf '%-10s  %-28s  %7s\n' total "$([ $FAILED = 0 ] && echo ok || echo FAILED)" "$SECONDS"
  echo "logs: $LOGDIR"
} > "$LOGDIR/summary.txt"

if [ -n "${OUT:-}" ]; then
  # The device tool returns at most 8 files, 2 folders deep: the key logs (last 4 MB) and
  # every log in one tarball.
  mkdir -p "$OUT/logs"
  cp "$LOGDIR/summary.txt" "$OUT/"
  [ -f "$LOGDIR/results_gpu.csv" ] && cp "$LOGDIR/results_gpu.csv" "$OUT/"
  [ -n "$PLOT" ] && cp "$PLOT" "$OUT/bench.png"
  for name in build pytest bench; do
    [ -f "$LOGDIR/$name.log" ] && tail -c 4000000 "$LOGDIR/$name.log" > "$OUT/logs/$name.log"
  done
  cat "$LOGDIR"/memcheck.log "$LOGDIR"/racecheck.log 2>/dev/null | tail -c 4000000 \
    > "$OUT/logs/sanitizer.log"
  tar -czf "$OUT/logs.tar.gz" "$LOGDIR" 2>/dev/null
fi

echo
echo "== benchmark table (bench/run.py)"
grep -v -e '^\[' -e '^== ' "$LOGDIR/bench.log" 2>/dev/null | tail -n 60
echo
echo "== pytest (last lines)"
tail -n 5 "$LOGDIR/pytest.log" 2>/dev/null
echo
echo "== summary"
cat "$LOGDIR/summary.txt"
exit $FAILED
