// CPU kernel of the Rank & Sort core: docs/MATH.md's pass A and pass B over compacted rows,
// with the per-pair arithmetic of csrc/rank_sort_math.h.
//
// Layout of the work, per row:
//   prep   : compact the row into [positives | negatives that survive row-level pruning],
//            keeping index order (one thread per row).
//   pass A : items (row, block of BP positives). For each element j (in a fixed order) the
//            inner loop runs over the block's positives, so it vectorises without reordering
//            any sum: every F_i, T_i, ... is a plain sequential sum over j.
//   rows   : rank/sort per row, summed over positives in index order (one thread).
//   pass B : items (row, block of BE elements). For each positive i (in index order) the
//            inner loop runs over the block's elements: each gradient is a sequential sum
//            over i, computed by one thread.
// No sum depends on how items are spread over threads, hence bitwise determinism for any
// num_threads (and the same SIMD-independence: no lane-split reductions).
//
// Rows the cost model (or the caller) gives to the bucketed algorithm skip passes A and B:
// rank_sort_bucketed_cpu.h computes each of them whole, one row per item, from the same
// compacted row. Rows with a non-finite score always stay pairwise (NaN and ±inf propagate
// through the pairwise sums exactly as the definition says; band sums would turn inf − inf
// into NaN where the definition has none).
#include "rank_sort_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "../rank_sort_bucketed_math.h"
#include "../rank_sort_math.h"
#include "../rank_sort_params.h"
#include "finite_step.h"
#include "rank_sort_bucketed_cpu.h"

namespace rspose {
namespace {

// Inner loops carry `omp simd` (honoured under -fopenmp-simd or -fopenmp): it makes GCC
// if-convert the selects of rank_sort_math.h instead of leaving branches (with
// -fno-trapping-math), and it has no reduction clause, so no sum is reordered.
#define RS_SIMD _Pragma("omp simd")

constexpr int BP = 64;   // positives per pass-A item; their accumulators stay in L1
constexpr int BE = 256;  // elements per pass-B item, at most
// Lanes a block is padded to: one AVX2 vector of float (the AVX-512 clone runs the last 8 as a
// shorter vector). Rows at the package's defaults have 20-70 positives, so padding to 16 or
// to a fixed 256-element pass-B block left most lanes idle (docs/CPU_PROFILE.md).
constexpr int VL = 8;
inline int32_t padded(int32_t cnt) { return (cnt + VL - 1) / VL * VL; }
// Elements per chunk of the streaming passes over a row: a chunk with nothing to do is
// skipped after one vectorised test.
constexpr int CHUNK = 32;

// Runs f(0..n-1) on up to `nthreads` threads pulling items from a shared counter. Which
// thread runs an item never changes what the item computes.
//
// With OpenMP the threads are those of the process's OpenMP pool, which is torch's own
// (the torch wheels load libgomp.so.1 first; ours resolves to the same library). That
// matters on a small machine: after any parallel torch op, torch's pool threads spin for a
// while, and separate std::threads would fight them for the cores (docs/MEASUREMENTS.md,
// "cpu threads: OpenMP pool"). Only `omp parallel` is used, no worksharing construct, to
// need nothing newer from libgomp than GOMP_parallel. Without OpenMP, plain std::threads.
template <typename F>
void parallel_for(int64_t n, int nthreads, const F& f) {
  if (n <= 0) return;
  const int64_t nt = std::min<int64_t>(std::max(nthreads, 1), n);
  if (nt == 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  // Items go out in runs of consecutive ones, about 16 runs per thread: neighbouring items
  // write neighbouring bytes (a row's counts, its positives' coefficients, the ends of its
  // compacted slots), and handing them out one by one to alternating threads made those
  // cache lines bounce between the cores on every item (the prep of the simcc rows ran
  // slower on 2 threads than on one).
  const int64_t run = std::max<int64_t>(1, n / (nt * 16));
  std::atomic<int64_t> next{0};
  auto worker = [&]() {
    for (;;) {
      const int64_t i0 = next.fetch_add(run, std::memory_order_relaxed);
      if (i0 >= n) break;
      const int64_t i1 = std::min(i0 + run, n);
      for (int64_t i = i0; i < i1; ++i) f(i);
    }
  };
#ifdef _OPENMP
#pragma omp parallel num_threads(static_cast<int>(nt))
  worker();
#else
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(nt - 1));
  for (int64_t t = 0; t + 1 < nt; ++t) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // fewer threads than asked: same results, just slower
    }
  }
  worker();
  for (auto& t : pool) t.join();
#endif
}

// Threads worth waking for `work` units (pairs or elements): below a few tens of thousands
// of pair evaluations per thread the hand-off costs more than it saves. Any count gives the
// same bits.
inline int threads_for(double work, int nthreads) {
  const double t = work / 65536.0;
  return t < 1.0 ? 1 : (t < nthreads ? static_cast<int>(t) : nthreads);
}

// The compaction buffers ([M*(L+1)] indices and scores), kept by the calling thread from
// call to call up to kKeptBytes: a fresh allocation of that size is mmap'd, and every call
// then page-faults it in again (about 1 ms a call at the simcc shape, 1 thread). Larger calls
// allocate their own and free them.
constexpr size_t kKeptBytes = size_t(64) << 20;

template <typename T>
struct Compaction {
  std::unique_ptr<int32_t[]> idx;
  std::unique_ptr<T[]> cs;
  size_t slots = 0;

  void reserve(size_t n) {
    if (slots >= n) return;
    idx.reset(new int32_t[n]);  // default-initialised: no zero-fill
    cs.reset(new T[n]);
    slots = n;
  }
};

// The calling thread's kept buffers: one set per score type, whatever the mode.
template <typename T>
Compaction<T>& kept_compaction() {
  static thread_local Compaction<T> kept;
  return kept;
}

template <typename T>
struct Workspace {
  // Row r's compacted element indices and their scores at r*(L+1), left uninitialised, n + ñ
  // of them live; prep_row writes scratch past them (at most up to slot L).
  Compaction<T> own;  // when the call is too large for the thread's kept buffers
  int32_t* idx = nullptr;
  T* cs = nullptr;
  std::vector<int32_t> npos;      // positives per row
  std::vector<int32_t> nneg;      // surviving negatives per row
  std::vector<uint8_t> bucketed;  // row goes to the bucketed algorithm
  std::vector<uint8_t> finite;    // row's live scores all finite (RowPrep::finite)
  std::vector<int64_t> poff;      // offset of row r's positives in the per-positive arrays
  // Per positive (uninitialised: every entry read is written first):
  std::unique_ptr<T[]> py, pw;  // y_i, 1 − y_i
  std::unique_ptr<T[]> lr, es;  // ℓR_i, eS_i
  std::unique_ptr<T[]> coef;    // K coefficients (see pass A)
};

// Coefficients kept per positive for pass B.
template <bool EXACT>
struct NCoef;
template <>
struct NCoef<false> {
  static constexpr int K = 3;  // r, q, self
};
template <>
struct NCoef<true> {
  static constexpr int K = 6;  // dF, dA, dC, dT, dD, self
};

// Hot loops are compiled for several x86-64 levels (AVX-512, AVX2, baseline) and picked at
// load time by the ifunc resolver. The clones see the same source, and no sum is split
// across SIMD lanes and FP contraction is off (-ffp-contract=off), so every clone returns
// bitwise the same numbers: only the speed depends on the machine.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__)
#define RS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RS_CPU_CLONES
#endif

// What pass B reads of positive i: its score, label and coefficients.
template <typename T>
struct PosB {
  T s, y, c0, c1, c2, c3, c4;
};

template <typename T, bool EXACT>
inline PosB<T> load_pos(const T* cs, const T* py, const T* coef, int32_t i) {
  constexpr int K = NCoef<EXACT>::K;
  const T* c = coef + static_cast<int64_t>(i) * K;
  return PosB<T>{
      cs[i], py[i], c[0], c[1], EXACT ? c[2] : T(0), EXACT ? c[3] : T(0), EXACT ? c[4] : T(0)};
}

// One term of element j's pass-B sum for positive i: H(x_ij)·coef or H'(x_ij)·coef.
template <typename T, bool HARD, bool EXACT, bool NEG, bool FINITE>
inline T term_b(T sj, T yj, T wj, const PosB<T>& q, const Step<T>& p) {
  const T x = sj - q.s;
  if (EXACT) return step_slope(x, p) * coef_b_exact(NEG, yj, wj, q.y, q.c0, q.c1, q.c2, q.c3, q.c4);
  return step_cpu<T, HARD, FINITE>(x, p) * coef_b_identity(NEG, yj, q.y, q.c0, q.c1);
}

// Pass A for positives i0 .. i0+BP-1 of one compacted row (cs: [positives | negatives]).
// The block is padded to a multiple of VL with copies of its last positive, so the inner
// loops run whole vectors; the padding's results are never stored.
template <typename T, bool HARD, bool EXACT, bool FINITE>
RS_CPU_CLONES void pass_a_block(const T* __restrict cs, const T* __restrict py,
                                const T* __restrict pw, int32_t n, int32_t nn, int32_t i0,
                                Step<T> p, T* __restrict lr, T* __restrict es, T* __restrict coef) {
  constexpr int K = NCoef<EXACT>::K;
  const int32_t cnt = n - i0 < BP ? n - i0 : BP;
  const int nb = padded(cnt);
  alignas(64) T si[BP], yi[BP];
  alignas(64) T F[BP], Tt[BP], Z[BP], C[BP], D[BP];
  alignas(64) T Fd[BP], Td[BP], Zd[BP], Cd[BP], Dd[BP];
  for (int i = 0; i < BP; ++i) {
    const int32_t k = i0 + (i < cnt ? i : cnt - 1);
    si[i] = cs[k];
    yi[i] = py[k];
    F[i] = Tt[i] = Z[i] = C[i] = D[i] = T(0);
    Fd[i] = Td[i] = Zd[i] = Cd[i] = Dd[i] = T(0);
  }
  // Negatives: accumulate_a with pos_j = false is F += H (and F' += H'). Four elements per
  // trip, added one after the other, so F_i stays the sequential sum over j.
  const T* neg = cs + n;
  int32_t j = 0;
  for (; j + 4 <= nn; j += 4) {
    const T s0 = neg[j], s1 = neg[j + 1], s2 = neg[j + 2], s3 = neg[j + 3];
    RS_SIMD for (int i = 0; i < nb; ++i) {
      const T x0 = s0 - si[i], x1 = s1 - si[i], x2 = s2 - si[i], x3 = s3 - si[i];
      T f = F[i];
      f += step_cpu<T, HARD, FINITE>(x0, p);
      f += step_cpu<T, HARD, FINITE>(x1, p);
      f += step_cpu<T, HARD, FINITE>(x2, p);
      f += step_cpu<T, HARD, FINITE>(x3, p);
      F[i] = f;
      if (EXACT) {
        T fd = Fd[i];
        fd += step_slope(x0, p);
        fd += step_slope(x1, p);
        fd += step_slope(x2, p);
        fd += step_slope(x3, p);
        Fd[i] = fd;
      }
    }
  }
  for (; j < nn; ++j) {
    const T sj = neg[j];
    RS_SIMD for (int i = 0; i < nb; ++i) {
      const T x = sj - si[i];
      F[i] += step_cpu<T, HARD, FINITE>(x, p);
      if (EXACT) Fd[i] += step_slope(x, p);
    }
  }
  // Positives (j = i included).
  for (j = 0; j < n; ++j) {
    const T sj = cs[j], yj = py[j], wj = pw[j];
    RS_SIMD for (int i = 0; i < nb; ++i) {
      const T x = sj - si[i];
      const bool ge = yj >= yi[i];
      SumsA<T> a{F[i], Tt[i], Z[i], C[i], D[i]};
      accumulate_a(a, step_cpu<T, HARD, FINITE>(x, p), true, ge, wj);
      F[i] = a.F;
      Tt[i] = a.T_;
      Z[i] = a.Z;
      C[i] = a.C;
      D[i] = a.D;
      if (EXACT) {
        SumsA<T> d{Fd[i], Td[i], Zd[i], Cd[i], Dd[i]};
        accumulate_a(d, step_slope(x, p), true, ge, wj);
        Fd[i] = d.F;
        Td[i] = d.T_;
        Zd[i] = d.Z;
        Cd[i] = d.C;
        Dd[i] = d.D;
      }
    }
  }
  for (int i = 0; i < cnt; ++i) {
    const SumsA<T> a{F[i], Tt[i], Z[i], C[i], D[i]};
    T* c = coef ? coef + static_cast<int64_t>(i) * K : nullptr;
    if (EXACT) {
      const SumsA<T> d{Fd[i], Td[i], Zd[i], Cd[i], Dd[i]};
      const ExactCoef<T> e = finish_exact(a, d);
      lr[i] = e.lr;
      es[i] = e.es;
      if (c) store_coef(e, c);
    } else {
      const IdentityCoef<T> e = finish_identity(a);
      lr[i] = e.lr;
      es[i] = e.es;
      if (c) store_coef(e, c);
    }
  }
}

// Pass B sweep of one block of nb elements (a multiple of VL, at most BE) over the positives
// listed in `act` (index order): g[j] += term(i) for each i in turn, four positives per trip,
// so each gradient is the sequential sum over i.
template <typename T, bool HARD, bool EXACT, bool NEG, bool FINITE>
inline void sweep_b(const T* __restrict sj, const T* __restrict yj, const T* __restrict wj,
                    T* __restrict g, int nb, const T* cs, const T* py, const T* coef,
                    const int32_t* act, int na, const Step<T>& p) {
  int q = 0;
  for (; q + 4 <= na; q += 4) {
    const PosB<T> a = load_pos<T, EXACT>(cs, py, coef, act[q]);
    const PosB<T> b = load_pos<T, EXACT>(cs, py, coef, act[q + 1]);
    const PosB<T> c = load_pos<T, EXACT>(cs, py, coef, act[q + 2]);
    const PosB<T> d = load_pos<T, EXACT>(cs, py, coef, act[q + 3]);
    RS_SIMD for (int j = 0; j < nb; ++j) {
      T acc = g[j];
      acc += term_b<T, HARD, EXACT, NEG, FINITE>(sj[j], yj[j], wj[j], a, p);
      acc += term_b<T, HARD, EXACT, NEG, FINITE>(sj[j], yj[j], wj[j], b, p);
      acc += term_b<T, HARD, EXACT, NEG, FINITE>(sj[j], yj[j], wj[j], c, p);
      acc += term_b<T, HARD, EXACT, NEG, FINITE>(sj[j], yj[j], wj[j], d, p);
      g[j] = acc;
    }
  }
  for (; q < na; ++q) {
    const PosB<T> a = load_pos<T, EXACT>(cs, py, coef, act[q]);
    RS_SIMD for (int j = 0; j < nb; ++j) g[j] +=
        term_b<T, HARD, EXACT, NEG, FINITE>(sj[j], yj[j], wj[j], a, p);
  }
}

// Pass B for compacted elements j0 .. j0+BE-1 of one row: negatives when j0 ≥ n, else
// positives (items never straddle the two). Writes their gradients, already divided by n.
template <typename T, bool HARD, bool EXACT, bool FINITE>
RS_CPU_CLONES void pass_b_block(const int32_t* __restrict idx, const T* __restrict cs,
                                const T* __restrict py, const T* __restrict pw,
                                const T* __restrict coef, int32_t n, int32_t nn, int32_t j0,
                                Step<T> p, T* __restrict grad_row) {
  constexpr int K = NCoef<EXACT>::K;
  const bool neg = j0 >= n;
  const int32_t end = neg ? n + nn : n;
  const int32_t cnt = end - j0 < BE ? end - j0 : BE;
  const int nb = padded(cnt);
  alignas(64) T sj[BE], yj[BE], wj[BE], g[BE];
  T smax = -std::numeric_limits<T>::infinity();
  RS_SIMD for (int j = 0; j < nb; ++j) {
    const int32_t k = j0 + (j < cnt ? j : cnt - 1);  // padded like pass A
    sj[j] = cs[k];
    yj[j] = neg ? T(0) : py[k];
    wj[j] = neg ? T(0) : pw[k];
    g[j] = T(0);
  }
  // The block's largest score, NaN when it holds one (max and or: exact in any order).
  int any_nan = 0;
#pragma omp simd reduction(max : smax) reduction(| : any_nan)
  for (int j = 0; j < nb; ++j) {
    smax = sj[j] > smax ? sj[j] : smax;
    any_nan |= sj[j] != sj[j];
  }
  if (any_nan) smax = std::numeric_limits<T>::quiet_NaN();
  // Positives in chunks: those with every element of the block more than δ below them
  // contribute exact zeros and are dropped (a NaN smax drops nothing).
  constexpr int CH = 64;
  int32_t act[CH];
  for (int32_t c0 = 0; c0 < n; c0 += CH) {
    const int32_t c1 = c0 + CH < n ? c0 + CH : n;
    int na = 0;
    for (int32_t i = c0; i < c1; ++i)
      if (!prunable(smax, cs[i] - p.delta)) act[na++] = i;
    if (neg)
      sweep_b<T, HARD, EXACT, true, FINITE>(sj, yj, wj, g, nb, cs, py, coef, act, na, p);
    else
      sweep_b<T, HARD, EXACT, false, FINITE>(sj, yj, wj, g, nb, cs, py, coef, act, na, p);
  }
  // Divided in one vector loop, then scattered (the division dominated a scalar loop).
  const T nf = T(n);
  RS_SIMD for (int j = 0; j < cnt; ++j) {
    const T self = neg ? T(0) : coef[static_cast<int64_t>(j0 + j) * K + (K - 1)];
    g[j] = neg ? g[j] / nf : (self + g[j]) / nf;
  }
  for (int j = 0; j < cnt; ++j) grad_row[idx[j0 + j]] = g[j];
}

// One row's prep: compacts it into idx / cs as [positives | negatives that survive
// row-level pruning] (index order; MATH.md: s_j < min_{i∈P} s_i − δ ⇒ H = H' = 0), writes
// the row's gradient zeros (grad_row, when not null: pass B and the bucketed path then
// overwrite the live elements), and chooses its algorithm (takes_bucketed,
// csrc/rank_sort_bucketed_math.h). Two streaming passes over the row, in chunks: a chunk
// with no positive (pass 1) or nothing to keep (pass 2) costs one vectorised test, which is
// almost every chunk of a trained head's rows.
struct RowPrep {
  int32_t n, nn;  // positives, kept negatives
  bool bucketed;
  bool finite;  // every live score is finite (step_cpu's FINITE path may take the row)
};

template <typename T>
RS_CPU_CLONES RowPrep prep_row(const T* __restrict sr, const T* __restrict yr, int64_t L, T delta,
                               T tau, int alg, const CostModel& cost, int32_t* __restrict idx,
                               T* __restrict cs, T* __restrict grad_row) {
  // Pass 1: the positives and their minimum score (NaN-propagating).
  int32_t n = 0;
  T smin = std::numeric_limits<T>::infinity();
  for (int64_t j0 = 0; j0 < L; j0 += CHUNK) {
    const int64_t j1 = j0 + CHUNK < L ? j0 + CHUNK : L;
    int any = 0;
#pragma omp simd reduction(| : any)
    for (int64_t j = j0; j < j1; ++j) any |= yr[j] > tau;
    if (!any) continue;
    // Branch-free compaction: every element is written at the next free slot, which only
    // advances past a positive (positives sit at unpredictable places within a chunk). The
    // slots past the row's last live element are scratch (idx / cs have L + 1 per row).
    for (int64_t j = j0; j < j1; ++j) {
      const bool pos = yr[j] > tau;
      idx[n] = static_cast<int32_t>(j);
      cs[n] = sr[j];
      smin = pos ? nan_min(sr[j], smin) : smin;
      n += pos;
    }
  }
  // Pass 2: the negatives at or above smin − δ (a NaN threshold keeps them all), and the
  // gradient's zeros.
  int32_t nn = 0;
  const T thr = smin - delta;
  for (int64_t j0 = 0; n > 0 && j0 < L; j0 += CHUNK) {
    const int64_t j1 = j0 + CHUNK < L ? j0 + CHUNK : L;
    int any = 0, all = 1;
#pragma omp simd reduction(| : any) reduction(& : all)
    for (int64_t j = j0; j < j1; ++j) {
      const int keep = !(yr[j] > tau) & !prunable(sr[j], thr);
      any |= keep;
      all &= keep;
    }
    if (grad_row) {
      RS_SIMD for (int64_t j = j0; j < j1; ++j) grad_row[j] = T(0);
    }
    if (!any) continue;
    if (all) {  // an untrained head's chunk: every element kept, copied as one vector loop
      int32_t* __restrict di = idx + n + nn;
      T* __restrict ds = cs + n + nn;
      RS_SIMD for (int64_t j = j0; j < j1; ++j) {
        di[j - j0] = static_cast<int32_t>(j);
        ds[j - j0] = sr[j];
      }
      nn += static_cast<int32_t>(j1 - j0);
      continue;
    }
    for (int64_t j = j0; j < j1; ++j) {
      idx[n + nn] = static_cast<int32_t>(j);
      cs[n + nn] = sr[j];
      nn += !(yr[j] > tau) & !prunable(sr[j], thr);
    }
  }
  if (n == 0 && grad_row) std::memset(grad_row, 0, sizeof(T) * static_cast<size_t>(L));
  // What the cost model and step_cpu need of the live scores: their largest magnitude and
  // whether one is NaN or ±inf (max and or: exact in any order, so the loop vectorises).
  bool nonfinite = false;
  double span = 0;
  if (n > 0) {
    T m = T(0);
    int bad = 0;
#pragma omp simd reduction(max : m) reduction(| : bad)
    for (int32_t k = 0; k < n + nn; ++k) {
      const T a = std::fabs(cs[k]);
      bad |= !(a <= std::numeric_limits<T>::max());
      m = a > m ? a : m;
    }
    nonfinite = bad != 0;
    span = static_cast<double>(m);
  }
  // No capacity on the CPU: any row may go bucketed (n ≤ L).
  const bool b = takes_bucketed(n, nn, span, nonfinite, static_cast<double>(delta), alg, L, cost);
  return RowPrep{n, nn, b, !nonfinite};
}

template <typename T, int MODE>
void run(const RankSortParams& prm) {
  constexpr bool HARD = MODE == kHard, EXACT = MODE == kExact;
  constexpr int K = NCoef<EXACT>::K;
  const int64_t M = prm.M, L = prm.L;
  const T* s = static_cast<const T*>(prm.scores);
  const T* y = static_cast<const T*>(prm.labels);
  T* rank = static_cast<T*>(prm.rank);
  T* sort = static_cast<T*>(prm.sort);
  T* grad = static_cast<T*>(prm.grad);
  int32_t* npos_out = prm.npos;
  const bool need_grad = prm.need_grad;
  const int nthreads = prm.num_threads;
  const T delta = static_cast<T>(prm.delta), tau = static_cast<T>(prm.pos_thr);
  const Step<T> p{delta, HARD ? T(0) : T(1) / (T(2) * delta)};
  Workspace<T> w;
  const int64_t LS = L + 1;  // a row's slots in idx / cs (prep_row's scratch writes)
  const size_t slots = static_cast<size_t>(M * LS);
  Compaction<T>& c =
      slots * (sizeof(int32_t) + sizeof(T)) <= kKeptBytes ? kept_compaction<T>() : w.own;
  c.reserve(slots);
  w.idx = c.idx.get();
  w.cs = c.cs.get();
  w.npos.assign(static_cast<size_t>(M), 0);
  w.nneg.assign(static_cast<size_t>(M), 0);
  w.bucketed.assign(static_cast<size_t>(M), 0);
  w.finite.assign(static_cast<size_t>(M), 0);
  // step_cpu's FINITE path: float rows with finite scores, the smooth ramp, a finite 1/(2δ).
  // kFinite is its template argument: false where it could never apply, so those
  // instantiations are not compiled twice.
  constexpr bool kFinite = std::is_same_v<T, float> && !HARD;
  const bool fast = kFinite && std::isfinite(p.inv2d);

  // prep: compaction, row-level pruning and each row's algorithm. An element costs about
  // 2 ns here on an untrained row (copied, zeroed, tested) and 0.3 ns on a trained one,
  // against about 0.2 ns a pair evaluation: weighed as 2 pairs. (Weighed as 1/8, the simcc
  // rows' prep, a fifth of their kernel time, ran on one thread.)
  parallel_for(M, threads_for(2.0 * static_cast<double>(M) * L, nthreads), [&](int64_t r) {
    const RowPrep rp = prep_row(s + r * L, y + r * L, L, delta, tau, prm.algorithm, prm.cost,
                                w.idx + r * LS, w.cs + r * LS, need_grad ? grad + r * L : nullptr);
    w.npos[r] = rp.n;
    w.nneg[r] = rp.nn;
    w.bucketed[r] = rp.bucketed;
    w.finite[r] = fast && rp.finite;
  });

  // Bucketed rows: whole, one per item (a row's work is O((n + ñ)·log n)), run in pass A's
  // parallel region below.
  std::vector<int64_t> rows_b;
  double work_b = 0;
  for (int64_t r = 0; r < M; ++r) {
    if (!w.bucketed[r]) continue;
    rows_b.push_back(r);
    work_b += 16.0 * (w.npos[r] + w.nneg[r]) * std::log2(2.0 * w.npos[r] + 2.0);
  }

  // Per-positive arrays of the pairwise rows (bucketed ones count 0), and the pass-A items.
  w.poff.resize(static_cast<size_t>(M) + 1);
  w.poff[0] = 0;
  std::vector<int64_t> items_a;  // (row << 32 | block)
  for (int64_t r = 0; r < M; ++r) {
    npos_out[r] = w.npos[r];
    if (w.bucketed[r]) w.npos[r] = 0;
    w.poff[r + 1] = w.poff[r] + w.npos[r];
    for (int32_t b = 0; b * BP < w.npos[r]; ++b) items_a.push_back((r << 32) | b);
  }
  const int64_t ptot = w.poff[M];
  const size_t up = static_cast<size_t>(ptot);
  w.py.reset(new T[up]);
  w.pw.reset(new T[up]);
  w.lr.reset(new T[up]);
  w.es.reset(new T[up]);
  if (need_grad) w.coef.reset(new T[up * K]);
  // The positives' labels, gathered by row (a scattered read each: weighed as 16 pairs).
  parallel_for(M, threads_for(16.0 * static_cast<double>(ptot), nthreads), [&](int64_t r) {
    const int32_t* idx = w.idx + r * LS;
    T* py = w.py.get() + w.poff[r];
    T* pw = w.pw.get() + w.poff[r];
    for (int32_t k = 0; k < w.npos[r]; ++k) {
      const T yk = y[r * L + idx[k]];
      py[k] = yk;
      pw[k] = T(1) - yk;
    }
  });

  // Pair evaluations of each pass, to size the thread count.
  double pairs = 0;
  for (int64_t r = 0; r < M; ++r) pairs += static_cast<double>(w.npos[r]) * (w.npos[r] + w.nneg[r]);

  // pass A, with the bucketed rows as the first items of the same parallel region: a mixed
  // batch then costs no extra fork/join: on a loaded machine each region waits for its
  // slowest thread (docs/MEASUREMENTS.md, "cpu auto: one parallel region").
  const int64_t nrb = static_cast<int64_t>(rows_b.size());
  parallel_for(nrb + static_cast<int64_t>(items_a.size()), threads_for(pairs + work_b, nthreads),
               [&](int64_t it) {
                 if (it < nrb) {
                   const int64_t r = rows_b[it];
                   bucketed_row<T>(w.idx + r * LS, w.cs + r * LS, y + r * L, npos_out[r], w.nneg[r],
                                   static_cast<double>(delta), EXACT, need_grad, rank + r, sort + r,
                                   need_grad ? grad + r * L : nullptr);
                   return;
                 }
                 it -= nrb;
                 const int64_t r = items_a[it] >> 32;
                 const int32_t i0 = static_cast<int32_t>(items_a[it] & 0xffffffff) * BP;
                 const int64_t o = w.poff[r] + i0;
                 const auto block = w.finite[r] ? pass_a_block<T, HARD, EXACT, kFinite>
                                                : pass_a_block<T, HARD, EXACT, false>;
                 block(w.cs + r * LS, w.py.get() + w.poff[r], w.pw.get() + w.poff[r], w.npos[r],
                       w.nneg[r], i0, p, w.lr.get() + o, w.es.get() + o,
                       need_grad ? w.coef.get() + o * K : nullptr);
               });

  // Rows: means over positives in index order.
  for (int64_t r = 0; r < M; ++r) {
    if (w.bucketed[r]) continue;
    const int32_t n = w.npos[r];
    T sr = T(0), ss = T(0);
    for (int32_t k = 0; k < n; ++k) {
      sr += w.lr[w.poff[r] + k];
      ss += w.es[w.poff[r] + k];
    }
    rank[r] = n > 0 ? sr / T(n) : T(0);
    sort[r] = n > 0 ? ss / T(n) : T(0);
  }
  if (!need_grad) return;

  // pass B items: per row, blocks over the surviving negatives, then over the positives.
  std::vector<int64_t> items_b;  // (row << 32 | start in the compacted row)
  for (int64_t r = 0; r < M; ++r) {
    if (w.bucketed[r]) continue;
    const int32_t n = w.npos[r], nn = w.nneg[r];
    for (int32_t j = n; j < n + nn; j += BE) items_b.push_back((r << 32) | j);
    for (int32_t j = 0; j < n; j += BE) items_b.push_back((r << 32) | j);
  }
  parallel_for(static_cast<int64_t>(items_b.size()), threads_for(pairs, nthreads), [&](int64_t it) {
    const int64_t r = items_b[it] >> 32;
    const int32_t j0 = static_cast<int32_t>(items_b[it] & 0xffffffff);
    const auto block =
        w.finite[r] ? pass_b_block<T, HARD, EXACT, kFinite> : pass_b_block<T, HARD, EXACT, false>;
    block(w.idx + r * LS, w.cs + r * LS, w.py.get() + w.poff[r], w.pw.get() + w.poff[r],
          w.coef.get() + w.poff[r] * K, w.npos[r], w.nneg[r], j0, p, grad + r * L);
  });
}

}  // namespace

void rank_sort_cpu(const RankSortParams& p) {
  if (p.M <= 0) return;
  dispatch_dtype_mode(p, [&](auto s, auto, auto mode) {
    run<typename decltype(s)::type, decltype(mode)::value>(p);
  });
}

void bucketed_rows_cpu(const RankSortParams& p, uint8_t* out) {
  dispatch_dtype_mode(p, [&](auto s, auto, auto) {
    using T = typename decltype(s)::type;
    const T* sc = static_cast<const T*>(p.scores);
    const T* y = static_cast<const T*>(p.labels);
    std::vector<int32_t> idx(static_cast<size_t>(p.L) + 1);
    std::vector<T> cs(static_cast<size_t>(p.L) + 1);
    for (int64_t r = 0; r < p.M; ++r)
      out[r] = prep_row(sc + r * p.L, y + r * p.L, p.L, static_cast<T>(p.delta),
                        static_cast<T>(p.pos_thr), p.algorithm, p.cost, idx.data(), cs.data(),
                        static_cast<T*>(nullptr))
                   .bucketed;
  });
}

}  // namespace rspose
