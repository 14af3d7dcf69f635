// Runs the CUDA backend's real kernels and launch sequence (csrc/cuda/rank_sort_launch.cuh)
// on the host, under the emulation of the CUDA execution model in shim/cuda_shim.h, and
// compares every output with the CPU kernel (csrc/cpu). Built and run by
// tests/test_cuda_emulated.py; by hand, from the repository root:
//   g++ -std=c++20 -O2 -Icsrc -Itests/cuda_emu/shim tests/cuda_emu/emu_test.cpp
//       csrc/cpu/rank_sort_cpu.cpp -o /tmp/emu_test && /tmp/emu_test
// What this checks: the kernels' logic, barriers and warp exchanges as the model orders them,
// grid-stride loops, launch configurations, and no writes outside the output buffers (guard
// bytes). What it cannot see (data races, memory errors, timing) is compute-sanitizer's job
// on a GPU: see the shim's header.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cpu/rank_sort_cpu.h"
#include "cuda/rank_sort_launch.cuh"

using namespace rspose;
using namespace rspose::cuda_detail;

namespace {

constexpr unsigned kNoCap = 0xffffffffu;
long g_ctas = 0;

// The Launch of rank_sort_launch.cuh. Grids are clamped to caps after the requested grid is
// checked: every kernel grid-strides, so it must give the same result on any smaller grid,
// and small caps are how the strided paths get exercised at test sizes.
struct EmuLaunch {
  unsigned gx_cap, gy_cap;
  int* splits;  // counts the pass-B launches that split rows (finish_kernel launches)
  template <typename... P, typename... Args>
  std::string operator()(const char* name, void (*kernel)(P...), dim3 grid, dim3 block,
                         Args... args) const {
    std::string err = emu::check_config(grid, block);
    if (std::string(name) == "finish_kernel") ++*splits;
    if (err.empty()) {
      const dim3 run(grid.x < gx_cap ? grid.x : gx_cap, grid.y < gy_cap ? grid.y : gy_cap, grid.z);
      g_ctas += static_cast<long>(run.x) * run.y * run.z;
      err = emu::launch(kernel, run, block, args...);
    }
    return err.empty() ? err : std::string(name) + ": " + err;
  }
};

// A buffer with guard bytes on both sides, to catch writes past its ends.
template <typename T>
struct Guarded {
  static constexpr size_t kGuard = 64 * sizeof(T);
  std::vector<unsigned char> buf;
  size_t n;
  Guarded(size_t n_, T fill) : buf(n_ * sizeof(T) + 2 * kGuard, 0xA5), n(n_) {
    for (size_t i = 0; i < n; ++i) data()[i] = fill;
  }
  T* data() { return reinterpret_cast<T*>(buf.data() + kGuard); }
  bool intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (buf[i] != 0xA5 || buf[buf.size() - 1 - i] != 0xA5) return false;
    return true;
  }
};

struct Case {
  const char* what;
  int dtype;
  int64_t M, L;
  double delta;
  bool exact, need_grad;
  double pos_thr, pos_frac;
  bool ties, trained, nan;
  unsigned gx_cap;
  CudaTuning tuning;          // the SM count and knobs the launch shape is planned for
  bool buckets_only = false;  // a case for the bucketed rows: not run pairwise
  double scale = 1.0;         // scores × scale (near DBL_MAX: those rows must stay pairwise)
};

const char* dtype_name(int d) {
  return d == kFloat32 ? "f32" : d == kFloat64 ? "f64" : d == kFloat16 ? "f16" : "bf16";
}

long g_values = 0;
int g_split_launches = 0;
long g_bucketed_rows = 0;

// The cost model of auto cases: the CUDA defaults' shape (rspose_kernels/backends/
// cost_model.py), scaled so that the test sizes give a mix of both algorithms.
const CostModel kCost{0.5, 2.0, 1.0, 1.0};

const char* alg_name(int a) {
  return a == kPairwise ? "pairwise" : a == kBucketed ? "bucketed" : "auto";
}

struct Compare {
  double abs_tol, rel_tol;
  int bad = 0;
  void operator()(const char* what, int64_t i, double got, double want) {
    ++g_values;
    if (std::isnan(got) && std::isnan(want)) return;
    if (std::fabs(got - want) <= abs_tol + rel_tol * std::fabs(want)) return;
    if (bad++ < 5)
      std::printf("    %s[%" PRId64 "]: emulated %.9g, cpu %.9g\n", what, i, got, want);
  }
};

template <typename S, typename A>
int run_case(const Case& c, int seed, int alg) {
  const int64_t M = c.M, L = c.L;
  const size_t ML = static_cast<size_t>(M * L);
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  std::uniform_real_distribution<double> ud;
  std::vector<double> sv(ML), yv(ML);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t j = 0; j < L; ++j) {
      double s = nd(rng), q = ud(rng) * 0.999 + 0.001;
      bool pos = ud(rng) < c.pos_frac;
      if (r == 0) pos = false;  // empty row
      if (r == 1) pos = true;   // all-positive row
      if (c.ties) {
        s = std::round(s * 2) / 2;
        q = std::ceil(q * 4) / 4;
      }
      if (c.trained && pos) s = 5 + 0.1 * s + 3 * q;  // negatives far below: prunable tiles
      sv[r * L + j] = s * c.scale;
      // Positives above pos_thr; negatives at or below it (soft negatives when pos_thr > 0).
      yv[r * L + j] = pos ? c.pos_thr + (1 - c.pos_thr) * q : c.pos_thr * ud(rng);
    }
  if (c.nan) sv[2 * L + 3] = NAN;

  // Scores in their dtype; the CPU kernel reads the same values in the accumulation type.
  std::vector<S> s(ML);
  std::vector<A> s_ref(ML), y(ML);
  for (size_t i = 0; i < ML; ++i) {
    s[i] = to_scalar<S>(static_cast<A>(sv[i]));
    s_ref[i] = load_acc<A>(&s[i]);
    y[i] = static_cast<A>(yv[i]);
  }

  const Plan plan = make_plan(M, L, c.exact, acc_bytes(c.dtype), c.tuning);
  const Layout lay =
      make_layout(M, L, acc_bytes(c.dtype), c.exact, c.need_grad, plan.split, alg != kPairwise);
  Guarded<char> ws(lay.total, static_cast<char>(0xff));  // garbage: unwritten reads give NaN
  Guarded<A> rank(M, A(NAN)), sort(M, A(NAN));
  Guarded<int32_t> npos(M, -7);
  Guarded<A> grad(c.need_grad ? ML : 0, A(NAN));  // the gradient comes back in acc
  RankSortParams prm;
  prm.scores = s.data();
  prm.labels = y.data();
  prm.M = M;
  prm.L = L;
  prm.dtype = c.dtype;
  prm.delta = c.delta;
  prm.pos_thr = c.pos_thr;
  prm.exact = c.exact;
  prm.need_grad = c.need_grad;
  prm.rank = rank.data();
  prm.sort = sort.data();
  prm.npos = npos.data();
  prm.grad = c.need_grad ? static_cast<void*>(grad.data()) : nullptr;
  prm.algorithm = alg;
  prm.cost = kCost;
  prm.workspace = ws.data();
  prm.workspace_bytes = lay.total;
  prm.tuning = c.tuning;
  const std::string err =
      launch_all(EmuLaunch{c.gx_cap, kNoCap, &g_split_launches}, prm, lay, plan);
  // Rows the device chose to compute bucketed (non-vacuity: the test asserts there are many).
  int64_t nbuck = 0;
  if (lay.buckets && err.empty())
    for (int64_t r = 0; r < M; ++r)
      nbuck += reinterpret_cast<const int32_t*>(ws.data() + lay.bsel)[r] >= 0;
  g_bucketed_rows += nbuck;

  std::vector<A> rank2(M), sort2(M), grad2(ML);
  std::vector<int32_t> npos2(M);
  // The same call on the CPU kernel: the scores in the accumulation type, one thread, and
  // the CPU's cost model (its bucketed path has no positive-positive pairs).
  RankSortParams cpu = prm;
  cpu.scores = s_ref.data();
  cpu.dtype = c.dtype == kFloat64 ? kFloat64 : kFloat32;
  cpu.rank = rank2.data();
  cpu.sort = sort2.data();
  cpu.npos = npos2.data();
  cpu.grad = grad2.data();
  cpu.num_threads = 1;
  cpu.cost.bucketed_positive_pairs = 0.0;
  rank_sort_cpu(cpu);

  const bool f64 = c.dtype == kFloat64;
  Compare acc{f64 ? 1e-12 : 1e-6, f64 ? 1e-9 : 1e-4};
  int bad = 0;
  if (!err.empty()) {
    std::printf("    launch error: %s\n", err.c_str());
    ++bad;
  }
  for (int64_t r = 0; r < M; ++r) {
    ++g_values;
    if (npos.data()[r] != npos2[r] && bad++ < 5)
      std::printf("    npos[%" PRId64 "]: emulated %d, cpu %d\n", r, npos.data()[r], npos2[r]);
    acc("rank", r, rank.data()[r], rank2[r]);
    acc("sort", r, sort.data()[r], sort2[r]);
  }
  if (c.need_grad)
    for (size_t i = 0; i < ML; ++i) {
      const A got = grad.data()[i];
      // In a row with a NaN loss the CPU may give 0 where the GPU computes 0 · NaN (or the
      // reverse): NaN there is not a mismatch.
      const int64_t r = static_cast<int64_t>(i) / L;
      if (std::isnan(got) && (std::isnan(rank2[r]) || std::isnan(sort2[r]))) continue;
      acc("grad", static_cast<int64_t>(i), got, grad2[i]);
    }
  if (!ws.intact() || !rank.intact() || !sort.intact() || !npos.intact() || !grad.intact()) {
    std::printf("    write outside a buffer\n");
    ++bad;
  }
  bad += acc.bad;
  std::printf("%-22s %-4s M=%-3" PRId64 " L=%-4" PRId64
              " delta=%-4g tau=%-3g %s%s %s "
              "(%" PRId64 " bucketed) sms=%d ctas A/B=%" PRId64 "/%" PRId64
              " split=%d grid<=%u: %s\n",
              c.what, dtype_name(c.dtype), M, L, c.delta, c.pos_thr, c.exact ? "exact" : "identity",
              c.need_grad ? "" : " no-grad", alg_name(alg), nbuck, c.tuning.sms, plan.ctas_a,
              plan.ctas_b, plan.split, c.gx_cap == kNoCap ? 0u : c.gx_cap, bad ? "FAIL" : "ok");
  return bad;
}

int run(const Case& c, int seed, int alg) {
  RankSortParams p;  // only its dtype matters to the switch
  p.dtype = c.dtype;
  int bad = 1;
  dispatch_dtype_mode<__half, __nv_bfloat16>(p, [&](auto s, auto a, auto) {
    bad = run_case<typename decltype(s)::type, typename decltype(a)::type>(c, seed, alg);
  });
  return bad;
}

}  // namespace

int main() {
  constexpr unsigned N = kNoCap;
  // Launch shapes: the default tuning on a small device (persistent grids of a few CTAs, so
  // every item loop strides), one that splits rows in pass B (few rows, many warps wanted),
  // and an H100's 132 SMs (grids larger than the work: idle CTAs and warps exit).
  const CudaTuning small{2, 2, 8, 8}, split{4, 1, 256, 8}, h100{132, 4, 64, 32};
  // Rows 0 and 1 of every case are empty and all-positive. Lengths are off the tile sizes
  // (256 pass-A tile, 256-slot pass-B chunks, 32/64 positives per pass-A item); grid caps
  // force the grid-stride loops further. grid<=0 in the log means uncapped.
  // clang-format off: one row per case, as a table
  const Case cases[] = {
      // what                   dtype     M    L     delta  exact  grad   tau  frac  ties   trained nan    cap tuning
      {"smooth",               kFloat32, 5,   37,   0.5,   false, true,  0,   0.3,  false, false, false, N, small},
      {"smooth split",         kFloat32, 5,   37,   0.5,   false, true,  0,   0.3,  false, false, false, N, split},
      {"hard ties",            kFloat32, 5,   37,   0.0,   false, true,  0,   0.3,  true,  false, false, N, small},
      {"hard ties split",      kFloat32, 5,   90,   0.0,   false, true,  0,   0.5,  true,  false, false, N, split},
      {"exact ties",           kFloat32, 5,   37,   0.25,  true,  true,  0,   0.3,  true,  false, false, N, small},
      {"exact",                kFloat64, 4,   300,  0.5,   true,  true,  0,   0.3,  false, false, false, N, h100},
      {"exact split",          kFloat64, 3,   300,  0.5,   true,  true,  0,   0.4,  false, false, false, N, split},
      {"strided ties",         kFloat32, 4,   300,  1.0,   false, true,  0,   0.5,  true,  false, false, 1, small},
      {"long rows",            kFloat32, 3,   1100, 0.5,   false, true,  0,   0.1,  false, false, false, N, small},
      {"exact one CTA",        kFloat32, 3,   1100, 0.5,   true,  true,  0,   0.1,  false, false, false, 1, small},
      {"one long row split",   kFloat32, 1,   700,  0.5,   false, true,  0,   1.0,  false, false, false, N, split},
      {"L=1",                  kFloat32, 3,   1,    0.5,   false, true,  0,   0.5,  false, false, false, N, small},
      {"L=0",                  kFloat32, 3,   0,    0.5,   true,  true,  0,   0.5,  false, false, false, N, small},
      {">256 positives hard",  kFloat64, 3,   600,  0.0,   false, true,  0,   0.6,  true,  false, false, N, small},
      {"NaN score",            kFloat32, 4,   40,   0.5,   false, true,  0,   0.3,  false, false, true,  N, small},
      {"NaN score exact",      kFloat64, 4,   40,   0.5,   true,  true,  0,   0.3,  false, false, true,  N, split},
      {"prunable",             kFloat32, 4,   1100, 0.5,   false, true,  0,   0.02, false, true,  false, N, small},
      {"prunable exact",       kFloat32, 4,   1100, 0.5,   true,  true,  0,   0.02, false, true,  false, N, small},
      {"prunable hard",        kFloat32, 4,   700,  0.0,   false, true,  0,   0.02, false, true,  false, N, h100},
      {"soft negatives",       kFloat32, 4,   300,  0.5,   false, true,  0.3, 0.4,  false, false, false, N, small},
      {"soft negatives exact", kFloat64, 4,   300,  0.5,   true,  true,  0.3, 0.4,  true,  false, false, N, small},
      {"no grad",              kFloat32, 4,   300,  0.5,   false, false, 0,   0.3,  false, false, false, N, small},
      {"no grad exact",        kFloat64, 4,   300,  0.5,   true,  false, 0,   0.3,  false, false, false, N, split},
      {"many rows",            kFloat32, 300, 20,   0.5,   false, true,  0,   0.3,  false, false, false, 7, small},
      {"many rows h100",       kFloat32, 300, 20,   0.5,   false, true,  0,   0.3,  false, false, false, N, h100},
      {"f16",                  kFloat16, 4,   300,  0.5,   false, true,  0,   0.3,  false, false, false, N, small},
      {"f16 exact strided",    kFloat16, 4,   300,  0.5,   true,  true,  0,   0.4,  false, false, false, 2, split},
      {"bf16 hard ties",       kBFloat16,4,   300,  0.0,   false, true,  0,   0.3,  true,  false, false, N, small},
      {"bf16 exact",           kBFloat16,3,   600,  0.25,  true,  true,  0,   0.3,  false, false, false, N, split},
      // Rows within the bucketed sort's capacity (n ≤ max(64, L/8)) at the lengths above, so
      // the bucketed kernels take most rows in every mode and dtype.
      {"b: exact",             kFloat64, 5,   300,  0.5,   true,  true,  0,   0.15, false, false, false, N, h100, true},
      {"b: exact ties",        kFloat32, 5,   300,  0.25,  true,  true,  0,   0.15, true,  false, false, 2, small, true},
      {"b: hard ties",         kFloat64, 5,   300,  0.0,   false, true,  0,   0.15, true,  false, false, N, split, true},
      {"b: soft negatives",    kFloat32, 5,   300,  0.5,   false, true,  0.3, 0.15, false, false, false, N, small, true},
      {"b: long rows",         kFloat32, 3,   1100, 1.0,   true,  true,  0,   0.1,  true,  false, false, 1, small, true},
      {"b: f16",               kFloat16, 5,   300,  0.5,   false, true,  0,   0.15, false, false, false, N, small, true},
      {"b: bf16 exact",        kBFloat16,5,   300,  0.5,   true,  true,  0,   0.15, false, false, false, N, split, true},
      {"b: no grad",           kFloat32, 5,   300,  0.5,   true,  false, 0,   0.15, false, false, false, N, small, true},
      // n ≈ 290 positives and ñ ≈ 2300 negatives in the random row: several sort entries and
      // scan segments per thread, several search items per row (cross-CTA atomics).
      {"b: n~290",             kFloat32, 3,   2600, 0.5,   false, true,  0,   0.11, false, false, false, 2, small, true},
      {"b: n~290 exact ties",  kFloat64, 3,   2600, 0.5,   true,  true,  0,   0.11, true,  false, false, N, h100, true},
      // Scores near DBL_MAX: differences would overflow a double; the rows stay pairwise.
      {"b: huge f64",          kFloat64, 4,   300,  0.5,   false, true,  0,   0.15, false, false, false, N, small, true, 1e306},
  };
  // clang-format on
  // Every case runs pairwise and with the bucketed algorithm forced (rows that cannot take it
  // — a NaN, n past the sort's capacity — stay pairwise, as on the GPU), each against the CPU
  // kernel with the same algorithm; every third case also under auto (a mix of rows), and the
  // "b:" cases (rows that fit the bucketed sort) bucketed and auto only.
  int bad = 0, n = 0, seed = 0;
  for (const Case& c : cases) {
    ++seed;
    for (int alg :
         {static_cast<int>(kPairwise), static_cast<int>(kBucketed), static_cast<int>(kAuto)}) {
      if (alg == kPairwise && c.buckets_only) continue;
      if (alg == kAuto && seed % 3 != 0 && !c.buckets_only) continue;
      bad += run(c, seed, alg) != 0;
      ++n;
    }
  }
  std::printf(
      "emulated %d cases, %ld CTAs, %ld values compared, %d split launches, %ld "
      "bucketed rows: %d mismatches\n",
      n, g_ctas, g_values, g_split_launches, g_bucketed_rows, bad);
  return bad != 0;
}
