#pragma once
// The CUDA kernels of the Rank & Sort core; see rank_sort_launch.cuh for the launch sequence.
// Include after <cuda_runtime.h>, <cuda_fp16.h> and <cuda_bf16.h>. Free of nvcc's <<< >>>, so
// g++ can also compile them against the host emulation of tests/cuda_emu (no GPU needed).
#include <climits>
#include <cmath>
#include <cstdint>

#include "../dtypes.h"
#include "../rank_sort_bucketed_math.h"
#include "../rank_sort_math.h"
#include "../rank_sort_params.h"  // Mode

namespace rspose {
namespace cuda_detail {

// Every kernel runs kThreads threads, declared with __launch_bounds__(kThreads, 1): one
// resident CTA is enough, so ptxas may use up to 255 registers rather than spill
// (docs/MEASUREMENTS.md, "cuda launch bounds").
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = kThreads;  // pass-A tile: one element per thread
// Pass-B slots per lane (a warp item is 32 × that): 8, or 4 for float64 exact mode, whose
// 8 would spill on sm_80.
__host__ __device__ constexpr int ept_for(bool wide_exact) { return wide_exact ? 4 : 8; }
constexpr unsigned kFull = 0xffffffffu;

template <int MODE>
struct ModeTraits {
  static constexpr bool exact = MODE == kExact;
  static constexpr bool hard = MODE == kHard;
  // Positives per warp: fewer in exact mode, which carries twice the accumulators.
  static constexpr int ppw = exact ? 4 : 8;
  static constexpr int bp = kWarps * ppw;  // positives per pass-A item
  static constexpr int k = exact ? 5 : 2;  // pass-B coefficients per positive (+ the self term)
};

__host__ __device__ inline int bp_for(bool exact) {
  return exact ? ModeTraits<kExact>::bp : ModeTraits<kSmooth>::bp;
}

// Scores of any dtype, read as the accumulation type.
template <typename A, typename S>
__device__ __forceinline__ A load_acc(const S* p) {
  return static_cast<A>(*p);
}
template <>
__device__ __forceinline__ float load_acc<float, __half>(const __half* p) {
  return __half2float(*p);
}
template <>
__device__ __forceinline__ float load_acc<float, __nv_bfloat16>(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

template <typename S, typename A>
__device__ __forceinline__ S to_scalar(A v) {
  return static_cast<S>(v);
}
template <>
__device__ __forceinline__ __half to_scalar<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 to_scalar<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  // Butterfly: every lane ends with the same bits (each step adds the same two values,
  // and a + b == b + a exactly), so whichever lane writes, the result is fixed.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

template <typename A>
__device__ __forceinline__ SumsA<A> warp_sum(const SumsA<A>& a) {
  return SumsA<A>{warp_sum(a.F), warp_sum(a.T_), warp_sum(a.Z), warp_sum(a.C), warp_sum(a.D)};
}

template <typename A>
__device__ __forceinline__ A warp_nan_min(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = nan_min(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

template <typename A>
__device__ __forceinline__ A inf_value() {
  return static_cast<A>(INFINITY);
}

// Host-chosen launch shape (rank_sort_cuda.h's CudaTuning, resolved for one call). Every
// choice depends on M, L and the device only, never on data, so the same input on the same
// device always gives the same bits.
struct Plan {
  int64_t ctas_a;  // pass-A CTAs (persistent: they loop over the device-counted items)
  int64_t ctas_b;  // pass-B CTAs, kWarps warp items each at a time
  int split;       // pass B: positives of a row split over this many warp items (1: none)
  int chunk;       // pass B: slots per warp item (32 × ept_for)
  int64_t ctas;    // the persistent grids' cap (SMs × CTAs per SM): per-row bucketed kernels
};

// Workspace carving, identical on host and device sides.
struct Layout {
  size_t nkeep, key, plab, idx, a_off, b_off, partials, coef, gpart;
  // The bucketed rows' segments (BucketWs in rank_sort_bucketed_kernels.cuh); all empty
  // when the call cannot take the bucketed algorithm (algorithm "pairwise").
  bool buckets;
  int64_t np, nb;  // per row: positives a bucketed row may have, histogram entries
  size_t bsel, boff, bfix, sorder, ql, qh, bkey, lob, hcnt, hsum, qneg, fb, fbd, pre, alpha, beta;
  size_t total;
};

__host__ __device__ inline size_t align_up(size_t x) { return (x + 255) / 256 * 256; }

// Capacity of a bucketed row (rank_sort_bucketed_kernels.cuh), for its workspace.
// Positives one CTA sorts in shared memory: (score, slot) pairs, 32 KB for a 4-byte
// accumulation type, 24 KB for float64 (under sm_80's 48 KB of static shared memory).
template <typename A>
__host__ __device__ constexpr int sort_max() {
  return sizeof(A) == 4 ? 4096 : 2048;
}

// The most positives a bucketed row may have at length L (bounds its workspace): at most
// L/8 (at least 64) of the row. The benchmark shapes have n ≤ L/20 (13×13 .. 49×49 Gaussian
// windows; SimCC 37 bins of 384); a row with more positives gains less, as its n² positive
// pairs dominate both paths.
__host__ __device__ inline int64_t np_cap(int64_t L, int64_t acc_bytes) {
  const int64_t by_len = (L + 7) / 8 > 64 ? (L + 7) / 8 : 64;
  const int64_t smax = acc_bytes == 4 ? sort_max<float>() : sort_max<double>();
  int64_t c = L < smax ? L : smax;
  return c < by_len ? c : by_len;
}
// Histogram entries per row: 2n keys give 2n + 1 buckets, plus one zero past the end.
__host__ __device__ inline int64_t nb_cap(int64_t np) { return 2 * np + 2; }

inline Layout make_layout(int64_t M, int64_t L, size_t acc_bytes, bool exact, bool need_grad,
                          int split, bool buckets) {
  const size_t m = static_cast<size_t>(M), l = static_cast<size_t>(L);
  const size_t nba = (l + bp_for(exact) - 1) / bp_for(exact);
  const size_t planes = (exact ? ModeTraits<kExact>::k : ModeTraits<kSmooth>::k) + 1;
  Layout w{};
  size_t off = 0;
  const auto take = [&off](size_t bytes) {  // the next segment: its offset; 256-byte aligned
    const size_t at = off;
    off = align_up(off + bytes);
    return at;
  };
  w.nkeep = take(m * sizeof(int32_t));
  w.key = take(m * l * acc_bytes);
  w.plab = take(m * l * acc_bytes);
  w.idx = take(m * l * sizeof(int32_t));
  w.a_off = take((m + 1) * sizeof(int64_t));
  w.b_off = take((m + 1) * sizeof(int64_t));
  w.partials = take(m * nba * 2 * acc_bytes);
  w.coef = take(need_grad ? m * planes * l * acc_bytes : 0);
  const size_t splits = need_grad && split > 1 ? static_cast<size_t>(split) : 0;
  w.gpart = take(splits * m * l * acc_bytes);
  // Bucketed rows: O(M·(np + nb) + M·L) with np ≤ L/8 (at least 64), nb = 2·np + 2.
  w.buckets = buckets && l > 0;
  w.np = w.buckets ? np_cap(L, static_cast<int64_t>(acc_bytes)) : 0;
  w.nb = w.buckets ? nb_cap(w.np) : 0;
  const size_t np = static_cast<size_t>(w.np), nb = static_cast<size_t>(w.nb);
  const size_t rows = w.buckets ? m : 0;
  w.bsel = take(rows * sizeof(int32_t));
  w.boff = take(rows * sizeof(double));
  w.bfix = take(rows * 2 * sizeof(double));
  w.sorder = take(m * np * sizeof(int32_t));
  w.ql = take(m * np * sizeof(int32_t));
  w.qh = take(m * np * sizeof(int32_t));
  w.bkey = take(m * nb * sizeof(double));
  w.lob = take(m * nb * sizeof(int32_t));
  w.hcnt = take(m * nb * sizeof(int32_t));
  w.hsum = take(m * nb * sizeof(unsigned long long));
  w.qneg = take(rows * l * sizeof(int32_t));
  w.fb = take(m * np * acc_bytes);
  w.fbd = take(exact ? m * np * acc_bytes : 0);
  const size_t grad_rows = need_grad ? m : 0;
  w.pre = take(grad_rows * (w.buckets ? 2 * (np + 1) : 0) * sizeof(double));
  w.alpha = take(grad_rows * nb * sizeof(double));
  w.beta = take(grad_rows * nb * sizeof(double));
  w.total = off;
  return w;
}

// The row holding item w: the largest r with off[r] <= w (off[0] = 0, off non-decreasing).
__device__ __forceinline__ int64_t row_of(const int64_t* __restrict__ off, int64_t M, int64_t w) {
  int64_t lo = 0, hi = M;  // off[lo] <= w < off[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (off[mid] <= w)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// Sum over the CTA, every thread gets it (kThreads threads; `scratch` holds kWarps values).
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r += scratch[w];
  __syncthreads();  // scratch is reused by the caller
  return r;
}

// Maximum over the CTA, every thread gets it (kThreads threads; `scratch` holds kWarps).
template <typename T>
__device__ __forceinline__ T block_max(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const T u = __shfl_xor_sync(kFull, v, o);
    v = u > v ? u : v;
  }
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r = scratch[w] > r ? scratch[w] : r;
  __syncthreads();  // scratch is reused by the caller
  return r;
}

// ---------------------------------------------------------------------------------------
// compact: per row, the positives (slots [0, n), index order: score, label, index) and the
// negatives pruning cannot skip (slots [n, n + k): score, index), as the Triton backend's
// compaction. A pruned negative (s < min positive score − δ, MATH.md) gets its gradient, 0,
// here and is never read again; so does every element of a row without positives.
//
// It also chooses the row's algorithm (docs/DESIGN.md §5b), on the device from its counts:
// with `bsel` (the bucketed workspace exists), by takes_bucketed (the rule the CPU kernel
// applies too, csrc/rank_sort_bucketed_math.h) with the sort's capacity max_pos. A
// bucketed row gets bsel = its kept negatives and nkeep = 0, so the pairwise passes sweep
// only its positives; other rows get bsel = −1.
template <typename S, typename A>
__global__ void __launch_bounds__(kThreads, 1)
    compact_kernel(const S* __restrict__ s, const A* __restrict__ y, int64_t M, int64_t L, A tau,
                   A delta, bool need_grad, int32_t* __restrict__ npos, int32_t* __restrict__ nkeep,
                   A* __restrict__ key, A* __restrict__ plab, int32_t* __restrict__ idx,
                   A* __restrict__ grad, int algorithm, CostModel cost, int64_t max_pos,
                   int32_t* __restrict__ bsel) {
  __shared__ int32_t warp_pos[kWarps];
  __shared__ int32_t warp_keep[kWarps];
  __shared__ A warp_min[kWarps];
  __shared__ int32_t count_scratch[kWarps];
  __shared__ double span_scratch[kWarps];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int64_t row = blockIdx.x; row < M; row += gridDim.x) {
    const S* sr = s + row * L;
    const A* yr = y + row * L;
    // Sweep 1: the positive count and the lowest positive score.
    int32_t cnt = 0;
    A m = inf_value<A>();
    for (int64_t j = tid; j < L; j += kThreads) {
      if (yr[j] > tau) {
        ++cnt;
        m = nan_min(load_acc<A>(sr + j), m);
      }
    }
    const int32_t n = block_sum(cnt, count_scratch);
    m = warp_nan_min(m);
    if (lane == 0) warp_min[warp] = m;
    __syncthreads();
    A smin = warp_min[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) smin = nan_min(warp_min[w], smin);
    const A thr = smin - delta;  // NaN (from a NaN positive) prunes nothing

    // Sweep 2: ballot scans give each kept element its slot.
    int32_t base_p = 0, base_k = 0;  // the same values in every thread
    double span = 0.0;               // max |s| over the live (positive or kept) elements seen
    int nonfinite = 0;               // a live score is NaN or ±inf
    for (int64_t c0 = 0; c0 < L; c0 += kThreads) {
      const int64_t j = c0 + tid;
      const bool in = j < L;
      const A sv = in ? load_acc<A>(sr + j) : A(0);
      const A yv = in ? yr[j] : A(0);
      const bool pos = in && yv > tau;
      const bool keep = in && !pos && n > 0 && !prunable(sv, thr);
      const unsigned bp = __ballot_sync(kFull, pos), bk = __ballot_sync(kFull, keep);
      if (lane == 0) {
        warp_pos[warp] = __popc(bp);
        warp_keep[warp] = __popc(bk);
      }
      __syncthreads();
      int32_t before_p = 0, before_k = 0, total_p = 0, total_k = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const int32_t cp = warp_pos[w], ck = warp_keep[w];
        before_p += w < warp ? cp : 0;
        before_k += w < warp ? ck : 0;
        total_p += cp;
        total_k += ck;
      }
      const unsigned below = (1u << lane) - 1u;
      if (bsel != nullptr && (pos || keep)) {  // only where the row may go bucketed
        const double a = fabs(static_cast<double>(sv));
        nonfinite |= !(a < static_cast<double>(INFINITY));  // NaN compares false
        span = a > span ? a : span;
      }
      if (pos) {
        const int64_t slot = row * L + base_p + before_p + __popc(bp & below);
        key[slot] = sv;
        plab[slot] = yv;
        idx[slot] = static_cast<int32_t>(j);
      } else if (keep) {
        const int64_t slot = row * L + n + base_k + before_k + __popc(bk & below);
        key[slot] = sv;
        idx[slot] = static_cast<int32_t>(j);
      } else if (in && need_grad) {
        grad[row * L + j] = A(0);
      }
      base_p += total_p;
      base_k += total_k;
      __syncthreads();  // warp_pos / warp_keep are rewritten by the next chunk
    }
    bool take = false;
    if (bsel != nullptr) {  // uniform branch: bsel is a kernel argument
      const bool bad = __syncthreads_or(nonfinite) != 0;
      span = block_max(span, span_scratch);
      take = takes_bucketed(n, base_k, span, bad, static_cast<double>(delta), algorithm, max_pos,
                            cost);
    }
    if (tid == 0) {
      npos[row] = n;
      nkeep[row] = take ? 0 : base_k;
      if (bsel != nullptr) bsel[row] = take ? base_k : -1;
    }
  }
}

// ---------------------------------------------------------------------------------------
// plan: one CTA. Items per row, prefix-summed: pass A takes ceil(n / BP) blocks of
// positives per row, pass B `split` × (ceil(k / chunk) + ceil(n / chunk)) warp items. The
// later kernels run a fixed grid that loops over these counts: no CTA is launched for a
// block without positives, and no host sync is needed to size anything.
__global__ void __launch_bounds__(kThreads, 1)
    plan_kernel(int64_t M, int bp, int split, int chunk, const int32_t* __restrict__ npos,
                const int32_t* __restrict__ nkeep, int64_t* __restrict__ a_off,
                int64_t* __restrict__ b_off) {
  __shared__ int64_t warp_a[kWarps];
  __shared__ int64_t warp_b[kWarps];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  int64_t carry_a = 0, carry_b = 0;  // the same in every thread
  if (tid == 0) {
    a_off[0] = 0;
    b_off[0] = 0;
  }
  for (int64_t r0 = 0; r0 < M; r0 += kThreads) {
    const int64_t r = r0 + tid;
    int64_t ia = 0, ib = 0;
    if (r < M) {
      const int64_t n = npos[r], k = nkeep[r];
      ia = (n + bp - 1) / bp;
      ib = static_cast<int64_t>(split) * ((k + chunk - 1) / chunk + (n + chunk - 1) / chunk);
    }
    // Inclusive scan: within the warp, then over the warp totals.
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int64_t ua = __shfl_up_sync(kFull, ia, o), ub = __shfl_up_sync(kFull, ib, o);
      if (lane >= o) {
        ia += ua;
        ib += ub;
      }
    }
    if (lane == 31) {
      warp_a[warp] = ia;
      warp_b[warp] = ib;
    }
    __syncthreads();
    int64_t pa = 0, pb = 0, ta = 0, tb = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      pa += w < warp ? warp_a[w] : 0;
      pb += w < warp ? warp_b[w] : 0;
      ta += warp_a[w];
      tb += warp_b[w];
    }
    if (r < M) {
      a_off[r + 1] = carry_a + pa + ia;
      b_off[r + 1] = carry_b + pb + ib;
    }
    carry_a += ta;
    carry_b += tb;
    __syncthreads();  // warp_a / warp_b are rewritten by the next chunk
  }
}

// ---------------------------------------------------------------------------------------
// pass A: items (row, block of BP positives) from the plan, looped over by a fixed grid.
// Warps own PPW positives each (in registers); all lanes stream first the kept negatives
// (F and F' only: `F += h`, the negative case of accumulate_a) and then the positives (the
// full update) through a shared-memory tile, lane ℓ taking elements ℓ, ℓ+32, ... A negative
// tile whose elements all lie below the block's lowest positive − δ is skipped (the
// compaction already dropped those below the row's lowest). Butterfly warp reductions then
// give each positive its sums; the pass-B coefficients go to the workspace and each item's
// Σ ℓR, Σ eS to its partial. A bucketed row (bsel ≥ 0) has nkeep = 0: its F_i (and F'_i)
// come from bucket_scan_kernel's `fb` (`fbd`) instead of the negative sweep.
template <typename A, int MODE>
__global__ void __launch_bounds__(kThreads, 1)
    pass_a_kernel(int64_t M, int64_t L, Step<A> p, bool need_grad, const int32_t* __restrict__ npos,
                  const int32_t* __restrict__ nkeep, const A* __restrict__ key,
                  const A* __restrict__ plab, const int64_t* __restrict__ a_off,
                  A* __restrict__ partials, A* __restrict__ coef, const int32_t* __restrict__ bsel,
                  const A* __restrict__ fb, const A* __restrict__ fbd, int64_t np) {
  using MT = ModeTraits<MODE>;
  constexpr int PPW = MT::ppw, BP = MT::bp, K = MT::k;
  __shared__ A tile_s[kTile];
  __shared__ A tile_y[kTile];
  __shared__ A warp_min[kWarps];
  __shared__ A blk_lr[BP];
  __shared__ A blk_es[BP];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t nba = (L + BP - 1) / BP;
  const int64_t items = a_off[M];

  for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
    const int64_t row = row_of(a_off, M, w), b = w - a_off[row];
    const int32_t n = npos[row], nk = nkeep[row];  // uniform over the CTA
    const A* kr = key + row * L;
    const A* yr = plab + row * L;
    // This warp's positives k0 .. k0+PPW-1; slots past n repeat the last positive (their
    // results are dropped), so every register holds a real score.
    const int64_t k0 = b * BP + warp * PPW;
    const bool warp_active = k0 < n;
    A si[PPW], yi[PPW];
    A wmin = inf_value<A>();
#pragma unroll
    for (int q = 0; q < PPW; ++q) {
      const int64_t k = k0 + q < n ? k0 + q : n - 1;
      si[q] = kr[k];
      yi[q] = yr[k];
      if (k0 + q < n) wmin = nan_min(si[q], wmin);
    }
    if (lane == 0) warp_min[warp] = wmin;
    __syncthreads();
    A bmin = warp_min[0];
#pragma unroll
    for (int v = 1; v < kWarps; ++v) bmin = nan_min(warp_min[v], bmin);
    const A thr = bmin - p.delta;  // NaN (from a NaN positive) prunes nothing

    SumsA<A> acc[PPW], dacc[PPW];
#pragma unroll
    for (int q = 0; q < PPW; ++q) {
      acc[q] = sums_zero<A>();
      dacc[q] = sums_zero<A>();
    }
    // Kept negatives, slots [n, n + nk): F (and F') only.
    for (int64_t t0 = 0; t0 < nk; t0 += kTile) {
      const bool in = t0 + tid < nk;
      const A sv = in ? kr[n + t0 + tid] : A(0);
      tile_s[tid] = sv;
      // Barrier and vote at once: skip the tile when no element can reach the block.
      const int live = __syncthreads_or(in && !prunable(sv, thr));
      if (live && warp_active) {
        const int cnt = nk - t0 < kTile ? static_cast<int>(nk - t0) : kTile;
        for (int e = lane; e < cnt; e += 32) {
          const A sj = tile_s[e];
#pragma unroll
          for (int q = 0; q < PPW; ++q) {
            const A x = sj - si[q];
            acc[q].F += step<A, MT::hard>(x, p);
            if (MT::exact) dacc[q].F += step_slope(x, p);
          }
        }
      }
      __syncthreads();  // the tile is rewritten next iteration
    }
    // Positives, slots [0, n) (j = i included): T, Z, C, D and their H' sums.
    for (int64_t t0 = 0; t0 < n; t0 += kTile) {
      const bool in = t0 + tid < n;
      tile_s[tid] = in ? kr[t0 + tid] : A(0);
      tile_y[tid] = in ? yr[t0 + tid] : A(0);
      __syncthreads();
      if (warp_active) {
        const int cnt = n - t0 < kTile ? static_cast<int>(n - t0) : kTile;
        for (int e = lane; e < cnt; e += 32) {
          const A sj = tile_s[e], yj = tile_y[e];
          const A wj = A(1) - yj;
#pragma unroll
          for (int q = 0; q < PPW; ++q) {
            const A x = sj - si[q];
            const bool ge = yj >= yi[q];
            accumulate_a(acc[q], step<A, MT::hard>(x, p), true, ge, wj);
            if (MT::exact) accumulate_a(dacc[q], step_slope(x, p), true, ge, wj);
          }
        }
      }
      __syncthreads();
    }

#pragma unroll
    for (int q = 0; q < PPW; ++q) {
      acc[q] = warp_sum(acc[q]);
      if (MT::exact) dacc[q] = warp_sum(dacc[q]);
    }
    if (lane == 0) {
      const bool bucketed = bsel != nullptr && bsel[row] >= 0;
#pragma unroll
      for (int q = 0; q < PPW; ++q) {
        const int64_t k = k0 + q;
        A lr = A(0), es = A(0);
        if (k < n) {
          if (bucketed) {
            acc[q].F = fb[row * np + k];
            if (MT::exact) dacc[q].F = fbd[row * np + k];
          }
          A c[K + 1];
          if constexpr (MT::exact) {
            const ExactCoef<A> e = finish_exact(acc[q], dacc[q]);
            lr = e.lr;
            es = e.es;
            store_coef(e, c);
          } else {
            const IdentityCoef<A> e = finish_identity(acc[q]);
            lr = e.lr;
            es = e.es;
            store_coef(e, c);
          }
          if (need_grad) {
#pragma unroll
            for (int i = 0; i <= K; ++i) coef[(row * (K + 1) + i) * L + k] = c[i];
          }
        }
        blk_lr[warp * PPW + q] = lr;
        blk_es[warp * PPW + q] = es;
      }
    }
    __syncthreads();
    if (tid == 0) {
      A sr_ = A(0), ss_ = A(0);
      for (int i = 0; i < BP; ++i) {  // block order; slots past n hold exact zeros
        sr_ += blk_lr[i];
        ss_ += blk_es[i];
      }
      partials[(row * nba + b) * 2 + 0] = sr_;
      partials[(row * nba + b) * 2 + 1] = ss_;
    }
    __syncthreads();  // warp_min, blk_lr, blk_es are rewritten by the next item
  }
}

// ---------------------------------------------------------------------------------------
// rows: rank = Σ ℓR / n, sort = Σ eS / n, summing the pass-A partials in block order.
template <typename A>
__global__ void __launch_bounds__(kThreads, 1)
    rows_kernel(int64_t M, int64_t L, int bp, const int32_t* __restrict__ npos,
                const A* __restrict__ partials, A* __restrict__ rank, A* __restrict__ sort) {
  const int64_t nba = (L + bp - 1) / bp;
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; row < M;
       row += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t n = npos[row];
    const int64_t nb = (static_cast<int64_t>(n) + bp - 1) / bp;
    A sr = A(0), ss = A(0);
    for (int64_t b = 0; b < nb; ++b) {
      sr += partials[(row * nba + b) * 2 + 0];
      ss += partials[(row * nba + b) * 2 + 1];
    }
    rank[row] = n > 0 ? sr / A(n) : A(0);
    sort[row] = n > 0 ? ss / A(n) : A(0);
  }
}

// Pass B's sweep of one warp item over its positives [p_lo, p_hi), for the first NR of each
// lane's slot rows: 32 positives at a time, one per lane, broadcast by shuffles.
template <int NR, int MODE, typename A, int EPT>
__device__ __forceinline__ void sweep_b(A (&g)[EPT], const A (&sj)[EPT], const A (&yj)[EPT],
                                        const A (&wj)[EPT], bool neg, int32_t p_lo, int32_t p_hi,
                                        int lane, const A* __restrict__ kr,
                                        const A* __restrict__ yr, const A* __restrict__ cr,
                                        int64_t L, const Step<A>& p) {
  using MT = ModeTraits<MODE>;
  constexpr int K = MT::k;
  for (int32_t p0 = p_lo; p0 < p_hi; p0 += 32) {
    const int cnt = p_hi - p0 < 32 ? p_hi - p0 : 32;  // uniform over the warp
    const bool mine = lane < cnt;
    const int64_t i = p0 + lane;
    const A s_i = mine ? kr[i] : A(0);
    if (neg) {
      const A c0 = mine ? cr[i] : A(0);  // r_i, or ∂F_i
      for (int q = 0; q < cnt; ++q) {
        const A sq = __shfl_sync(kFull, s_i, q), cq = __shfl_sync(kFull, c0, q);
#pragma unroll
        for (int r = 0; r < NR; ++r) {
          const A x = sj[r] - sq;
          if constexpr (MT::exact)
            g[r] += step_slope(x, p) * cq;
          else
            g[r] += step<A, MT::hard>(x, p) * cq;
        }
      }
    } else {
      // Plane 0 (r_i, ∂F_i) is for negatives only.
      const A y_i = mine ? yr[i] : A(0);
      A ci[K];
      ci[0] = A(0);
#pragma unroll
      for (int t = 1; t < K; ++t) ci[t] = mine ? cr[t * L + i] : A(0);
      for (int q = 0; q < cnt; ++q) {
        const A sq = __shfl_sync(kFull, s_i, q), yq = __shfl_sync(kFull, y_i, q);
        A cq[K];
        cq[0] = A(0);
#pragma unroll
        for (int t = 1; t < K; ++t) cq[t] = __shfl_sync(kFull, ci[t], q);
#pragma unroll
        for (int r = 0; r < NR; ++r) {
          const A x = sj[r] - sq;
          if constexpr (MT::exact) {
            g[r] += step_slope(x, p) *
                    coef_b_exact(false, yj[r], wj[r], yq, cq[0], cq[1], cq[2], cq[3], cq[4]);
          } else {
            g[r] += step<A, MT::hard>(x, p) * coef_b_identity(false, yj[r], yq, cq[0], cq[1]);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// pass B: warp items from the plan: (row, split s, chunk of 32·EPT slots), the negative
// chunks of a row first, then its positive chunks. A warp item is one warp's alone, so a
// CTA's warps may serve different rows (short rows pack several per CTA) and a row's
// positives may be split over `split` items (one long row still fills the GPU). Each lane
// holds EPT slots; the item's positives stream in groups of 32, one per lane, broadcast by
// shuffles, so each sum is one lane's sequential sum in positive order. With split == 1 the
// gradient is written at once; otherwise each split's partial goes to `gpart` and the finish
// kernel adds them in split order.
template <typename A, int MODE>
__global__ void __launch_bounds__(kThreads, 1)
    pass_b_kernel(int64_t M, int64_t L, Step<A> p, int split, const int32_t* __restrict__ npos,
                  const int32_t* __restrict__ nkeep, const A* __restrict__ key,
                  const A* __restrict__ plab, const int32_t* __restrict__ idx,
                  const int64_t* __restrict__ b_off, const A* __restrict__ coef,
                  A* __restrict__ grad, A* __restrict__ gpart) {
  using MT = ModeTraits<MODE>;
  constexpr int K = MT::k;
  constexpr int kEPT = ept_for(sizeof(A) == 8 && MT::exact), kChunk = 32 * kEPT;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t items = b_off[M];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;

  for (int64_t w = static_cast<int64_t>(blockIdx.x) * kWarps + warp; w < items; w += stride) {
    const int64_t row = row_of(b_off, M, w), local = w - b_off[row];
    const int32_t n = npos[row], nk = nkeep[row];
    const int64_t neg_chunks = (nk + kChunk - 1) / kChunk;
    const int64_t per_split = neg_chunks + (n + kChunk - 1) / kChunk;
    const int sp = static_cast<int>(local / per_split);
    const int64_t c = local % per_split;
    const bool neg = c < neg_chunks;
    const int64_t lo = neg ? n + c * kChunk : (c - neg_chunks) * kChunk;
    const int64_t hi = neg ? static_cast<int64_t>(n) + nk : static_cast<int64_t>(n);
    // This split's positives [p_lo, p_hi) (in int64: sp·seg + seg may pass 2^31 - 1).
    const int64_t seg = (static_cast<int64_t>(n) + split - 1) / split, lo_p = sp * seg;
    const int32_t p_lo = static_cast<int32_t>(lo_p < n ? lo_p : n);
    const int32_t p_hi = static_cast<int32_t>(n < lo_p + seg ? n : lo_p + seg);
    const A* kr = key + row * L;
    const A* yr = plab + row * L;
    const A* cr = coef + row * (K + 1) * L;

    A sj[kEPT], yj[kEPT], wj[kEPT], g[kEPT];
#pragma unroll
    for (int r = 0; r < kEPT; ++r) {
      const int64_t slot = lo + r * 32 + lane;
      const bool in = slot < hi;
      sj[r] = in ? kr[slot] : A(0);
      yj[r] = in && !neg ? yr[slot] : A(0);
      wj[r] = A(1) - yj[r];
      g[r] = A(0);
    }
    // Only the first nr of a lane's EPT slot rows hold slots (short rows, the last chunk of
    // a list): the sweep is instantiated for 8, 4, 2, 1 rows and skips the empty ones.
    const int nr = static_cast<int>((hi - lo + 31) / 32);
    constexpr int kHalf = kEPT >= 4 ? kEPT / 2 : 1, kQuarter = kEPT >= 8 ? kEPT / 4 : 1;
    if (nr > kEPT / 2) {
      sweep_b<kEPT, MODE>(g, sj, yj, wj, neg, p_lo, p_hi, lane, kr, yr, cr, L, p);
    } else if (kEPT >= 4 && nr > kEPT / 4) {
      sweep_b<kHalf, MODE>(g, sj, yj, wj, neg, p_lo, p_hi, lane, kr, yr, cr, L, p);
    } else if (kEPT >= 8 && nr > kEPT / 8) {
      sweep_b<kQuarter, MODE>(g, sj, yj, wj, neg, p_lo, p_hi, lane, kr, yr, cr, L, p);
    } else {
      sweep_b<1, MODE>(g, sj, yj, wj, neg, p_lo, p_hi, lane, kr, yr, cr, L, p);
    }
    const A nf = A(n > 0 ? n : 1);
#pragma unroll
    for (int r = 0; r < kEPT; ++r) {
      const int64_t slot = lo + r * 32 + lane;
      if (slot < hi) {
        if (split == 1) {
          const A v = neg ? g[r] / nf : (cr[K * L + slot] + g[r]) / nf;
          grad[row * L + idx[row * L + slot]] = v;
        } else {
          gpart[(sp * M + row) * L + slot] = g[r];
        }
      }
    }
  }
}

// finish (split > 1): per kept slot, the splits' partials in split order, the self term,
// the division by n, and the scatter to the element's index.
template <typename A, int MODE>
__global__ void __launch_bounds__(kThreads, 1)
    finish_kernel(int64_t M, int64_t L, int split, const int32_t* __restrict__ npos,
                  const int32_t* __restrict__ nkeep, const int32_t* __restrict__ idx,
                  const A* __restrict__ coef, const A* __restrict__ gpart, A* __restrict__ grad) {
  constexpr int K = ModeTraits<MODE>::k;
  const int64_t total = M * L;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = e / L, slot = e - row * L;
    const int32_t n = npos[row];
    if (slot >= static_cast<int64_t>(n) + nkeep[row]) continue;
    A g = A(0);
    for (int sp = 0; sp < split; ++sp) g += gpart[(sp * M + row) * L + slot];
    const A v = slot < n ? (coef[(row * (K + 1) + K) * L + slot] + g) / A(n) : g / A(n);
    grad[row * L + idx[e]] = v;
  }
}

}  // namespace cuda_detail
}  // namespace rspose
