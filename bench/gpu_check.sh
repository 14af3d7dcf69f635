#!/usr/bin/env bash
# One-call validation on a lent GPU machine (H100/H200, no network), from the repo root:
#   env -> build _C with CUDA -> backends -> CUDA-backend tests -> Triton tests -> other GPU
#   tests -> compute-sanitizer memcheck / racecheck -> CUDA launch-parameter sweep -> benchmark.
# Every step ends as pass, FAIL (with its log's last lines in the summary) or unavailable
# (with the reason: no GPU, no sanitizer, "Device not supported", a failed build the step
# needs...), and the next step runs anyway. Each step has its own time cap and never eats
# into the time reserved for the steps after it, so the whole script ends within
# RSPOSE_CHECK_BUDGET seconds (default 560, under a 10-minute call). If that is too tight,
# run it as two calls: RSPOSE_CHECK_STEPS="env build backends test_cuda test_triton
# test_other memcheck racecheck" and then RSPOSE_CHECK_STEPS="env build sweep bench" (the
# build is incremental).
# Exit status: 1 if a step failed or timed out, else 0 (unavailable steps are not failures,
# so a dry run on a machine without a GPU, or with RSPOSE_CHECK_DRY_RUN=1, reports every step
# unavailable and exits 0; RSPOSE_CHECK_LOGDIR moves the logs).
# Output: logs in bench/results/gpu_check_<stamp>/, benchmark rows appended to
# bench/results/results.csv (python3 -m bench.run), and when $OUT is set, ONE file
# $OUT/gpu_check_summary.txt: the step table, the environment, this run's benchmark rows and
# the sweep, and the tail of every failed step's log.
# The GPU machine has no .git: pass the commit, e.g.
#   RSPOSE_GIT_COMMIT=$(git rev-parse --short=10 HEAD) bash bench/gpu_check.sh
# It never changes GPU settings (clocks, persistence, power) and installs nothing.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
BUDGET=${RSPOSE_CHECK_BUDGET:-560}
WANT_STEPS=${RSPOSE_CHECK_STEPS:-"env build backends test_cuda test_triton test_other memcheck racecheck sweep bench"}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOGDIR=${RSPOSE_CHECK_LOGDIR:-bench/results/gpu_check_$STAMP}
RESULTS=bench/results/results.csv
mkdir -p "$LOGDIR"

export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export PIP_NO_INDEX=1   # no network there: never try to reach an index
# Triton must compile for the GPU here, never the interpreter (tests/conftest.py picks it only
# without a GPU).
export TRITON_INTERPRET=0 TRITON_DEFAULT_FP_FUSION=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

STEPS=() STATUS=() SECS=()
FAILED=0

# ----------------------------------------------------------------------------- step runner

# record NAME STATUS SECONDS
record() { STEPS+=("$1") STATUS+=("$2") SECS+=("$3"); echo "== $1: $2 (${3}s)"; }

wanted() { [[ " $WANT_STEPS " == *" $1 "* ]]; }

# step NAME CAP RESERVE CMD...: run CMD under `timeout`, for at most CAP seconds and never into
# the RESERVE seconds kept for the steps after it (both planned for 560 s, scaled to BUDGET).
# The log is $LOGDIR/NAME.log; CMD sees its limit as RSPOSE_STEP_LIMIT (seconds), for its own
# deadline. A step may declare itself unavailable by printing a line "UNAVAILABLE: reason"
# and exiting 3.
step() {
  local name=$1 cap=$(( $2 * BUDGET / 560 )) reserve=$(( $3 * BUDGET / 560 )); shift 3
  wanted "$name" || return 0
  local left=$(( BUDGET - SECONDS - reserve ))
  local limit=$(( cap < left ? cap : left ))
  local log="$LOGDIR/$name.log" t0=$SECONDS rc status
  if (( limit < 5 )); then
    echo "no time left in the ${BUDGET}s budget" > "$log"
    record "$name" "unavailable: no time left in the ${BUDGET}s budget" 0
    return
  fi
  echo "== $name (limit ${limit}s): $*" | tee "$log"
  RSPOSE_STEP_LIMIT=$limit timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  # pytest's own tally ("12 passed, 3 skipped in 40s"), so a run that skipped everything shows.
  local tally
  tally=$(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected)' "$log" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//')
  case $rc in
    0) status="pass${tally:+ ($tally)}" ;;
    3) status="unavailable: $(grep -m1 '^UNAVAILABLE: ' "$log" | cut -c14- | cut -c1-120)" ;;
    124|137) status="FAIL: timeout after ${limit}s"; FAILED=1 ;;
    5) status="FAIL: no tests ran (rc 5)"; FAILED=1 ;;
    *) status="FAIL: rc $rc${tally:+ ($tally)}"; FAILED=1 ;;
  esac
  record "$name" "$status" $(( SECONDS - t0 ))
}

# unavailable NAME WHY: a step that cannot run here (recorded, not a failure).
unavailable() {
  wanted "$1" || return 0
  echo "unavailable: $2" > "$LOGDIR/$1.log"
  record "$1" "unavailable: $2" 0
}

status_of() {
  local i
  for i in "${!STEPS[@]}"; do [ "${STEPS[$i]}" = "$1" ] && { echo "${STATUS[$i]}"; return; }; done
  echo "not run"
}

# ----------------------------------------------------------------------------- the steps

env_info() {
  # Read-only queries.
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit,compute_cap --format=csv
  nvidia-smi
  nvcc --version || echo "nvcc not on PATH"
  "$PY" - <<'EOF'
import sys, numpy, torch
print(sys.version)
print("numpy", numpy.__version__, "| torch", torch.__version__, "cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name(), torch.cuda.get_device_capability(),
      torch.cuda.get_device_properties(0).multi_processor_count, "SMs")
try:
    import triton
    print("triton", triton.__version__)
except ImportError as e:
    print("triton not importable:", e)
for tool in ("cmake", "ninja", "pybind11"):
    try:
        __import__(tool)
        print(tool, "(python package) present")
    except ImportError:
        print(tool, "(python package) absent")
EOF
  command -v cmake ninja || true
}

build() {
  local missing=()
  command -v cmake >/dev/null || "$PY" -c "import cmake" 2>/dev/null || missing+=(cmake)
  command -v ninja >/dev/null || "$PY" -c "import ninja" 2>/dev/null || missing+=(ninja)
  "$PY" -c "import pybind11" 2>/dev/null || missing+=(pybind11)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "UNAVAILABLE: build tools missing here (${missing[*]}); no network to install them"
    return 3
  fi
  # In place, no build isolation (no network), only the card at hand's architecture.
  RSPOSE_BUILD_EXT=1 RSPOSE_CUDA=1 MAX_JOBS=${MAX_JOBS:-8} "$PY" setup.py -q build_ext --inplace
}

backends() {
  "$PY" - <<'EOF'
import rspose_kernels as rk
cuda, cpu = rk.available_backends("cuda"), rk.available_backends("cpu")
print("backends on cuda:", cuda, "| on cpu:", cpu)
missing = [b for b in ("cuda", "triton") if b not in cuda]
if missing:
    raise SystemExit(f"not available on cuda: {missing}")
EOF
}

# pytest FILES...: the CUDA parametrisations only (-k cuda); rc 5 (none collected) is a failure.
# The Triton tests spend most of their time in the JIT (one compile per kernel variant, CPU
# bound): with pytest-xdist present they run on 4 processes.
gpu_pytest() {
  local par=()
  "$PY" -c "import xdist" 2>/dev/null && par=(-n 4)
  RSPOSE_REQUIRE_NATIVE=1 RSPOSE_REQUIRE_TRITON=1 "$PY" -m pytest -q -ra -p no:cacheprovider \
    --durations=5 "${par[@]}" -k cuda "$@"
}

SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
# Only the package's kernels (namespace rspose) are instrumented, so torch's own kernels in the
# tests run at full speed; RSPOSE_SANITIZE_FILTER="" instruments everything.
SANITIZE_FILTER=${RSPOSE_SANITIZE_FILTER-kns=rspose}
sanitize() {
  local filter=() log rc
  [ -n "$SANITIZE_FILTER" ] && filter=(--kernel-name "$SANITIZE_FILTER")
  log=$(mktemp)
  # No caching allocator, so that every tensor is its own allocation and an overrun is seen.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$1" --error-exitcode 86 \
    --print-limit 50 --target-processes all "${filter[@]}" \
    "$PY" -m pytest -q -x -p no:cacheprovider tests/test_native.py tests/test_cuda_bucketed.py \
    -k "cuda and not bitwise and not row_cases_float32 and not float64_matches_reference and not public_api_every" \
    2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # Some machines' sanitizer refuses the card: that is not a kernel failure.
  if grep -qiE "device not supported|not supported on this (device|platform)" "$log"; then
    echo "UNAVAILABLE: compute-sanitizer: $(grep -m1 -iE 'not supported' "$log" | cut -c1-100)"
    rm -f "$log"
    return 3
  fi
  rm -f "$log"
  return "$rc"
}

# The CUDA backend's per-row threshold (pairwise / bucketed / auto at each per-negative cost)
# and launch parameters (rspose_kernels/backends/native.py reads them from the environment),
# each setting timed on the benchmark shapes through the backend; bench.run uses the defaults.
# No new measurement starts in the last 10 s of the step's limit (one is well under a second).
sweep() {
  local limit=$RSPOSE_STEP_LIMIT
  "$PY" -m bench.cuda_sweep --deadline $(( limit > 20 ? limit - 10 : limit / 2 ))
}

# Every provider bench.run has on a GPU (providers_for: mse, each backend with algorithm
# auto and, where it has two, each forced: cuda/pairwise, cuda/bucketed, torch/..., rs_loop).
# It checks its deadline between cases (one takes ~10 s): ~20 s are left for the last case.
bench() {
  local limit=$RSPOSE_STEP_LIMIT
  "$PY" -m bench.run --no-progress --deadline $(( limit > 60 ? limit - 20 : limit / 2 ))
}

export -f env_info build backends gpu_pytest sanitize sweep bench
export PY SANITIZER SANITIZE_FILTER

# ----------------------------------------------------------------------------- plan

rows_before=$( [ -f "$RESULTS" ] && wc -l < "$RESULTS" || echo 0 )

GPU_WHY=""
if [ "${RSPOSE_CHECK_DRY_RUN:-0}" = 1 ]; then
  GPU_WHY="dry run (RSPOSE_CHECK_DRY_RUN=1)"
elif [ "${RSPOSE_CHECK_ASSUME_GPU:-0}" = 1 ]; then
  :   # skip the detection (exercises the step logic on a machine without a GPU)
elif ! command -v nvidia-smi >/dev/null; then
  GPU_WHY="no GPU: nvidia-smi not found"
elif ! nvidia-smi -L >/dev/null 2>&1; then
  GPU_WHY="no GPU: nvidia-smi -L fails ($(nvidia-smi -L 2>&1 | head -n 1 | cut -c1-80))"
elif ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  GPU_WHY="no GPU usable by torch (torch.cuda.is_available() is False)"
fi
if [ -z "$GPU_WHY" ] && [ -z "${RSPOSE_CUDA_ARCHS:-}" ]; then
  # Only the card at hand: halves the CUDA build time (the build's default is "80;90").
  cc=$("$PY" -c "import torch; a, b = torch.cuda.get_device_capability(); print(f'{a}{b}')" 2>/dev/null)
  export RSPOSE_CUDA_ARCHS=${cc:-90}
fi

if [ -n "$GPU_WHY" ]; then
  for s in $WANT_STEPS; do unavailable "$s" "$GPU_WHY"; done
else
  step env 20 500 bash -c env_info
  step build 150 350 bash -c build
  BUILD=$(status_of build)
  if [[ $BUILD == pass* || $BUILD == "not run" ]]; then
    step backends 20 340 bash -c backends
    step test_cuda 90 280 bash -c "gpu_pytest tests/test_native.py tests/test_cuda_bucketed.py"
  else
    unavailable backends "the build did not pass ($BUILD)"
    unavailable test_cuda "the build did not pass ($BUILD)"
  fi
  step test_triton 130 190 bash -c "gpu_pytest tests/test_triton.py"
  step test_other 60 150 bash -c \
    "gpu_pytest tests/test_compile.py tests/test_pose.py tests/test_gradients.py tests/test_errors.py"
  if [[ $BUILD != pass* && $BUILD != "not run" ]]; then
    unavailable memcheck "the build did not pass ($BUILD)"
    unavailable racecheck "the build did not pass ($BUILD)"
    unavailable sweep "the build did not pass ($BUILD)"
  elif [ -z "$SANITIZER" ]; then
    unavailable memcheck "compute-sanitizer not found"
    unavailable racecheck "compute-sanitizer not found"
  else
    step memcheck 50 110 bash -c "sanitize memcheck"
    step racecheck 40 110 bash -c "sanitize racecheck"
  fi
  if [[ $BUILD == pass* || $BUILD == "not run" ]]; then
    # 11 calls x (10 threshold + 11 launch settings) x 12 runs of at most a few ms: seconds
    # of GPU time, the rest CUDA start-up and inputs; the bench keeps >= 55 s after it.
    step sweep 60 60 bash -c sweep
  fi
  step bench 600 5 bash -c bench
fi

# ----------------------------------------------------------------------------- summary

if [ -f "$RESULTS" ]; then
  # bench.run starts a fresh file when the old one had another header.
  (( $(wc -l < "$RESULTS") < rows_before )) && rows_before=0
  { head -n 1 "$RESULTS"; tail -n +"$(( rows_before + 1 ))" "$RESULTS" | grep -v '^date,'; } \
    > "$LOGDIR/results_gpu.csv"
fi

{
  echo "rspose-kernels gpu_check, $(date -u +%FT%TZ), commit ${RSPOSE_GIT_COMMIT:-unknown}, budget ${BUDGET}s"
  echo
  printf '%-12s  %7s  %s\n' step seconds status
  for i in "${!STEPS[@]}"; do
    printf '%-12s  %7s  %s\n' "${STEPS[$i]}" "${SECS[$i]}" "${STATUS[$i]}"
  done
  printf '%-12s  %7s  %s\n' total "$SECONDS" "$([ $FAILED = 0 ] && echo 'no failures' || echo FAILED)"
  echo "logs: $LOGDIR"
  if [[ $(status_of env) == pass* ]]; then
    echo; echo "---- environment"; head -n 40 "$LOGDIR/env.log"
  fi
  if [[ $(status_of sweep) == pass* ]]; then
    # All of it (~250 lines): every setting's median per call, then the summary lines.
    echo; echo "---- CUDA threshold and launch-parameter sweep (bench.cuda_sweep)"
    tail -n +2 "$LOGDIR/sweep.log"
  fi
  if [ -f "$LOGDIR/results_gpu.csv" ] && (( $(wc -l < "$LOGDIR/results_gpu.csv") > 1 )); then
    echo; echo "---- benchmark rows (bench/results/results.csv)"; cat "$LOGDIR/results_gpu.csv"
    echo; echo "---- benchmark table"; grep -v -e '^\[' -e '^== ' "$LOGDIR/bench.log" | tail -n 150
  fi
  for i in "${!STEPS[@]}"; do
    if [[ ${STATUS[$i]} == FAIL* || ${STATUS[$i]} == *skipped* ]]; then
      echo; echo "---- ${STEPS[$i]}: ${STATUS[$i]} (last 80 lines of its log)"
      tail -n 80 "$LOGDIR/${STEPS[$i]}.log"
    fi
  done
} > "$LOGDIR/summary.txt"

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT" && cp "$LOGDIR/summary.txt" "$OUT/gpu_check_summary.txt"
fi
echo
cat "$LOGDIR/summary.txt"
exit $FAILED
