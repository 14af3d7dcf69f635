#pragma once
// The bucketed algorithm on the GPU (docs/DESIGN.md §5b, docs/MATH.md "The bucketed
// algorithm"): the twin of the pairwise negative sweeps of rank_sort_kernels.cuh, with the
// arithmetic of csrc/rank_sort_bucketed_math.h (shared with the CPU kernel); the launch
// sequence is in rank_sort_launch.cuh.
//
// A row goes bucketed when compact_kernel chooses it (on the device, from its counts and the
// cost model: no host sync). For such a row only the positive-negative terms change:
//   F_i (and F'_i) of every positive    from a histogram of the negatives over the 2n
//                                        breakpoints s_k ± δ, instead of n·ñ pairs;
//   the gradient of every negative       α[q] + β[q]·s from prefix sums over the sorted
//                                        positives, instead of ñ·n pairs.
// The positive-positive terms (A, C and the label-conditioned T, Z, D, the positives'
// gradient) stay with pass A / pass B's P×P tiles: docs/DESIGN.md §5b allows P×P for the
// label terms "when n is small", and n² is what is left: for the benchmark shapes' init
// regime it is 1/20 of the pairwise work (n ≈ 169..2401 positives against ñ ≈ 2.9k..47k
// negatives).
//
// Kernels (each loops over rows or items with a fixed grid; non-bucketed rows exit at once):
//   bucket_sort    one CTA per row: bitonic sort of the positives (score, slot) in shared
//                  memory; merged breakpoint keys by one binary search per key (merge path);
//                  the fixed point of the row's histogram; zeroed histogram.
//   bucket_search  items (row, 1024 negatives): one binary search per negative into the keys,
//                  its bucket kept, integer atomics into the histogram (count, Σ s in fixed
//                  point; the last bucket summed per CTA first): integer sums do not depend
//                  on their order, so the result is deterministic with no floating-point
//                  atomics.
//   bucket_scan    one CTA per row: suffix sums of the histogram (integers: exact), then F_i
//                  (and F'_i) of every positive for pass A.
//   bucket_coef    (gradient) one CTA per row: ordered prefix sums of pass A's r_i (or ∂F_i)
//                  and r_i·s_i over the sorted positives, then α, β per bucket.
//   bucket_grad    (gradient) items (row, 1024 negatives): g = (α[q] + β[q]·s) / n.
// Rows whose positives do not fit the shared-memory sort (n > np_cap) stay pairwise.
#include <climits>
#include <cmath>
#include <cstdint>

#include "../rank_sort_bucketed_math.h"
#include "rank_sort_kernels.cuh"  // kThreads, ModeTraits, sort_max, ...

namespace rspose {
namespace cuda_detail {

constexpr int kSearchChunk = 1024;  // negatives per bucket_search / bucket_grad item

// The bucketed rows' workspace (rank_sort_launch.cuh carves it): [M, np] per positive,
// [M, nb] per bucket, [M, L] per compacted slot.
template <typename A>
struct BucketWs {
  int32_t* bsel;             // [M]   kept negatives of a bucketed row; −1: the row is pairwise
  double* boff;              // [M]   the row offset (median positive score)
  double* bfix;              // [M,2] the histogram's fixed point (unit, 1/unit)
  int32_t* sorder;           // [M,np] sorted position -> slot of the positive
  int32_t* ql;               // [M,np] by sorted position: first bucket past the positive's lo key
  int32_t* qh;               // [M,np] ... past its hi key (δ = 0: both past its score)
  double* key;               // [M,nb] breakpoint keys, ascending (scores relative to boff)
  int32_t* lob;              // [M,nb] lo keys among the first q keys
  int32_t* hcnt;             // [M,nb] negatives per bucket, then suffix sums
  unsigned long long* hsum;  // [M,nb] Σ (s − boff) per bucket in fixed point, then suffix sums
  int32_t* qneg;             // [M,L] bucket of each kept negative slot
  A* fb;                     // [M,np] F_i per positive slot, for pass A
  A* fbd;                    // [M,np] F'_i (exact mode)
  double* pre;               // [M,2(np+1)] prefix sums of r_i (∂F_i) and r_i·u_i, sorted order
  double* alpha;             // [M,nb] a negative's gradient α + β·u in bucket q
  double* beta;              // [M,nb]
  int64_t np, nb;
};

// Number of j in [0, n) with f(j) < v (STRICT) or f(j) ≤ v, f non-decreasing.
template <bool STRICT, typename F>
__device__ __forceinline__ int32_t count_below(int32_t n, double v, const F& f) {
  int32_t lo = 0, hi = n;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    const double x = f(mid);
    if (STRICT ? x < v : x <= v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// (score, slot) a comes after b: the total order of the CPU kernel's sort (slots are index
// order), so both sort the positives identically.
template <typename A>
__device__ __forceinline__ bool after(A sa, int32_t ia, A sb, int32_t ib) {
  return sa > sb || (sa == sb && ia > ib);
}

// ---------------------------------------------------------------------------------------
template <typename A>
__global__ void __launch_bounds__(kThreads, 1)
    bucket_sort_kernel(int64_t M, int64_t L, double delta, bool hard,
                       const int32_t* __restrict__ npos, const A* __restrict__ key, BucketWs<A> b) {
  constexpr int NMAX = sort_max<A>();
  __shared__ A sk[NMAX];
  __shared__ int32_t sv[NMAX];
  __shared__ double red[kWarps];
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < M; row += gridDim.x) {
    const int32_t nn = b.bsel[row];
    if (nn < 0) continue;  // uniform over the CTA
    const int32_t n = npos[row];
    const A* kr = key + row * L;
    int32_t p2 = 1;
    while (p2 < n) p2 <<= 1;
    for (int32_t i = tid; i < p2; i += kThreads) {
      sk[i] = i < n ? kr[i] : inf_value<A>();  // bucketed rows have finite scores
      sv[i] = i < n ? i : INT_MAX;
    }
    __syncthreads();
    // Bitonic sort of p2 entries, ascending by (score, slot).
    for (int32_t k = 2; k <= p2; k <<= 1) {
      for (int32_t j = k >> 1; j > 0; j >>= 1) {
        for (int32_t i = tid; i < p2; i += kThreads) {
          const int32_t l = i ^ j;
          if (l > i) {
            const bool up = (i & k) == 0;
            const A si = sk[i], sl = sk[l];
            const int32_t ii = sv[i], il = sv[l];
            if (up ? after(si, ii, sl, il) : after(sl, il, si, ii)) {
              sk[i] = sl;
              sk[l] = si;
              sv[i] = il;
              sv[l] = ii;
            }
          }
        }
        __syncthreads();
      }
    }
    // Scores relative to the median positive, as the CPU kernel (exact for float scores).
    const double off = static_cast<double>(sk[n / 2]);
    const int64_t pr = row * b.np, br = row * b.nb;
    auto u_of = [&](int32_t j) { return static_cast<double>(sk[j]) - off; };
    for (int32_t i = tid; i < n; i += kThreads) {
      const double u = u_of(i);
      b.sorder[pr + i] = sv[i];
      if (hard) {
        b.key[br + i] = u;
        b.ql[pr + i] = b.qh[pr + i] = i + 1;
        continue;
      }
      // The merge of the ascending lo and hi lists, lo first on ties (the CPU's merge): lo_i
      // lands after the hi keys below it, hi_i after the lo keys at or below it.
      const double lo = key_lo(u, delta), hi = key_hi(u, delta);
      const int32_t at_lo =
          i + count_below<true>(n, lo, [&](int32_t j) { return key_hi(u_of(j), delta); });
      const int32_t at_hi =
          i + count_below<false>(n, hi, [&](int32_t j) { return key_lo(u_of(j), delta); });
      b.key[br + at_lo] = lo;
      b.key[br + at_hi] = hi;
      b.ql[pr + i] = at_lo + 1;
      b.qh[pr + i] = at_hi + 1;
      b.lob[br + at_lo + 1] = i + 1;
      b.lob[br + at_hi + 1] = at_hi - i;
    }
    if (tid == 0) b.lob[br] = 0;
    // The fixed point of this row's Σ s: from the largest |s − off| over its negatives.
    double vmax = 0.0;
    for (int32_t j = tid; j < nn; j += kThreads)
      vmax = fmax(vmax, fabs(static_cast<double>(kr[n + j]) - off));
    vmax = block_max(vmax, red);
    const int32_t nk = hard ? n : 2 * n;
    for (int32_t q = tid; q < nk + 2; q += kThreads) {
      b.hcnt[br + q] = 0;
      b.hsum[br + q] = 0ull;
    }
    if (tid == 0) {
      const FixedPoint fp = fixed_point_for(vmax, nn);
      b.boff[row] = off;
      b.bfix[2 * row] = fp.unit;
      b.bfix[2 * row + 1] = fp.inv_unit;
    }
    __syncthreads();  // sk, sv are rewritten by the next row
  }
}

// ---------------------------------------------------------------------------------------
// Negatives above every positive's ramp all land in the last bucket (an untrained head's
// bright background): those are summed per CTA first and added with one atomic pair per
// item, so that bucket is not a serial hot spot. (The first bucket, below every ramp, holds
// only negatives at exactly s_min − δ: pruning removed the ones below.)
template <typename A>
__global__ void __launch_bounds__(kThreads, 1)
    bucket_search_kernel(int64_t M, int64_t L, bool hard, const int32_t* __restrict__ npos,
                         const A* __restrict__ key, BucketWs<A> b) {
  __shared__ long long top_scratch[kWarps];
  const int64_t per_row = (L + kSearchChunk - 1) / kSearchChunk, items = M * per_row;
  for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
    const int64_t row = w / per_row, c = w - row * per_row;
    const int32_t nn = b.bsel[row];
    if (nn < 0 || c * kSearchChunk >= nn) continue;  // uniform over the CTA
    const int32_t n = npos[row], nk = hard ? n : 2 * n;
    const double off = b.boff[row];
    const FixedPoint fp{b.bfix[2 * row], b.bfix[2 * row + 1]};
    const double* keys = b.key + row * b.nb;
    int32_t* cnt = b.hcnt + row * b.nb;
    unsigned long long* sum = b.hsum + row * b.nb;
    long long top_n = 0, top_s = 0;
    for (int64_t j = c * kSearchChunk + threadIdx.x; j < nn && j < (c + 1) * kSearchChunk;
         j += kThreads) {
      const int64_t slot = n + j;
      const double u = static_cast<double>(key[row * L + slot]) - off;
      const int32_t q = bucket_of(u, keys, nk);
      const long long fx = static_cast<long long>(to_fixed(u, fp));
      b.qneg[row * L + slot] = q;
      if (q == nk) {
        ++top_n;
        top_s += fx;
      } else {
        atomicAdd(cnt + q, 1);
        atomicAdd(sum + q, static_cast<unsigned long long>(fx));
      }
    }
    // Integer sums: the reduction order cannot change a bit.
    top_n = block_sum(top_n, top_scratch);
    top_s = block_sum(top_s, top_scratch);
    if (threadIdx.x == 0 && top_n > 0) {
      atomicAdd(cnt + nk, static_cast<int32_t>(top_n));
      atomicAdd(sum + nk, static_cast<unsigned long long>(top_s));
    }
  }
}

// ---------------------------------------------------------------------------------------
template <typename A, bool EXACT>
__global__ void __launch_bounds__(kThreads, 1)
    bucket_scan_kernel(int64_t M, int64_t L, double inv2d, bool hard,
                       const int32_t* __restrict__ npos, const A* __restrict__ key, BucketWs<A> b) {
  __shared__ int64_t tc[kThreads];
  __shared__ unsigned long long ts[kThreads];
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < M; row += gridDim.x) {
    if (b.bsel[row] < 0) continue;
    const int32_t n = npos[row], nb = (hard ? n : 2 * n) + 1;
    const int64_t br = row * b.nb, pr = row * b.np;
    int32_t* cnt = b.hcnt + br;
    unsigned long long* sum = b.hsum + br;
    // Suffix sums over buckets (entry q: Σ over buckets ≥ q). Integer sums, so the split
    // into thread segments cannot change a bit; sums wrap modulo 2^64 like int64 two's
    // complement and the true totals fit (FixedPoint).
    const int32_t seg = (nb + kThreads - 1) / kThreads;
    const int32_t lo = tid * seg < nb ? tid * seg : nb, hi = lo + seg < nb ? lo + seg : nb;
    int64_t c = 0;
    unsigned long long s = 0ull;
    for (int32_t q = lo; q < hi; ++q) {
      c += cnt[q];
      s += sum[q];
    }
    tc[tid] = c;
    ts[tid] = s;
    __syncthreads();
    if (tid == 0) {  // exclusive suffix over the segments
      int64_t rc = 0;
      unsigned long long rs = 0ull;
#pragma unroll 1
      for (int t = kThreads - 1; t >= 0; --t) {
        const int64_t vc = tc[t];
        const unsigned long long vs = ts[t];
        tc[t] = rc;
        ts[t] = rs;
        rc += vc;
        rs += vs;
      }
    }
    __syncthreads();
    c = tc[tid];
    s = ts[tid];
    for (int32_t q = hi - 1; q >= lo; --q) {
      c += cnt[q];
      s += sum[q];
      cnt[q] = static_cast<int32_t>(c);
      sum[q] = s;
    }
    __syncthreads();  // entry nb stays the zero bucket_sort wrote
    // F_i = (negatives at or past hi_i) + ramp mass of those in [lo_i, hi_i).
    const double off = b.boff[row];
    const FixedPoint fp{b.bfix[2 * row], b.bfix[2 * row + 1]};
    for (int32_t k = tid; k < n; k += kThreads) {
      const int32_t slot = b.sorder[pr + k];
      const double u = static_cast<double>(key[row * L + slot]) - off;
      const int32_t l = b.ql[pr + k], h = b.qh[pr + k];
      const double ramp_n = static_cast<double>(cnt[l] - cnt[h]);
      const double ramp_s = from_fixed(static_cast<int64_t>(sum[l] - sum[h]), fp);
      const double F = static_cast<double>(cnt[h]) + ramp_mass(ramp_n, ramp_s, u, inv2d);
      b.fb[pr + slot] = static_cast<A>(F);
      if (EXACT) b.fbd[pr + slot] = static_cast<A>(ramp_n * inv2d);
    }
    __syncthreads();  // tc, ts are rewritten by the next row
  }
}

// ---------------------------------------------------------------------------------------
// Reads plane 0 of pass A's coefficients: r_i (identity) or ∂F_i (exact), what the
// negatives need.
template <typename A, bool EXACT>
__global__ void __launch_bounds__(kThreads, 1)
    bucket_coef_kernel(int64_t M, int64_t L, double inv2d, bool hard,
                       const int32_t* __restrict__ npos, const A* __restrict__ key,
                       const A* __restrict__ coef, BucketWs<A> b) {
  constexpr int K = ModeTraits<(EXACT ? kExact : kSmooth)>::k;  // planes: K + 1 per positive
  __shared__ double t0[kThreads];
  __shared__ double t1[kThreads];
  const int tid = threadIdx.x;
  for (int64_t row = blockIdx.x; row < M; row += gridDim.x) {
    if (b.bsel[row] < 0) continue;
    const int32_t n = npos[row], nb = (hard ? n : 2 * n) + 1;
    const int64_t br = row * b.nb, pr = row * b.np;
    const double off = b.boff[row];
    const A* c0 = coef + row * (K + 1) * L;  // plane 0
    double* pre = b.pre + row * 2 * (b.np + 1);
    auto term = [&](int32_t k, double& r, double& ru) {
      const int32_t slot = b.sorder[pr + k];
      r = static_cast<double>(c0[slot]);
      ru = r * (static_cast<double>(key[row * L + slot]) - off);
    };
    // Ordered prefix sums over sorted positions: fixed thread segments, each summed in
    // order, then the segment carries in order: the same bits on every run.
    const int32_t seg = (n + kThreads - 1) / kThreads;
    const int32_t lo = tid * seg < n ? tid * seg : n, hi = lo + seg < n ? lo + seg : n;
    double s0 = 0.0, s1 = 0.0;
    for (int32_t k = lo; k < hi; ++k) {
      double r, ru;
      term(k, r, ru);
      s0 += r;
      s1 += ru;
    }
    t0[tid] = s0;
    t1[tid] = s1;
    __syncthreads();
    if (tid == 0) {
      double r0 = 0.0, r1 = 0.0;
#pragma unroll 1
      for (int t = 0; t < kThreads; ++t) {
        const double v0 = t0[t], v1 = t1[t];
        t0[t] = r0;
        t1[t] = r1;
        r0 += v0;
        r1 += v1;
      }
      pre[0] = 0.0;
      pre[1] = 0.0;
    }
    __syncthreads();
    s0 = t0[tid];
    s1 = t1[tid];
    for (int32_t k = lo; k < hi; ++k) {
      double r, ru;
      term(k, r, ru);
      s0 += r;
      s1 += ru;
      pre[2 * (k + 1)] = s0;
      pre[2 * (k + 1) + 1] = s1;
    }
    __syncthreads();
    // Bucket q: positives [0, bq) saturated, [bq, a) on their ramp (MATH.md). Identity:
    // Σ_{i<b} r_i + Σ_{b≤i<a} r_i·((u − u_i)/(2δ) + 1/2); exact: Σ_{b≤i<a} ∂F_i/(2δ).
    for (int32_t q = tid; q < nb; q += kThreads) {
      const int32_t a = hard ? q : b.lob[br + q], bq = hard ? q : q - a;
      const double dr = pre[2 * a] - pre[2 * bq];
      if (EXACT) {
        b.alpha[br + q] = dr * inv2d;
        b.beta[br + q] = 0.0;
      } else {
        b.alpha[br + q] = pre[2 * bq] + 0.5 * dr - (pre[2 * a + 1] - pre[2 * bq + 1]) * inv2d;
        b.beta[br + q] = dr * inv2d;
      }
    }
    __syncthreads();  // t0, t1 are rewritten by the next row
  }
}

// ---------------------------------------------------------------------------------------
template <typename A>
__global__ void __launch_bounds__(kThreads, 1)
    bucket_grad_kernel(int64_t M, int64_t L, const int32_t* __restrict__ npos,
                       const A* __restrict__ key, const int32_t* __restrict__ idx, BucketWs<A> b,
                       A* __restrict__ grad) {
  const int64_t per_row = (L + kSearchChunk - 1) / kSearchChunk, items = M * per_row;
  for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
    const int64_t row = w / per_row, c = w - row * per_row;
    const int32_t nn = b.bsel[row];
    if (nn < 0 || c * kSearchChunk >= nn) continue;
    const int32_t n = npos[row];
    const double off = b.boff[row], inv_n = 1.0 / n;
    const int64_t br = row * b.nb;
    for (int64_t j = c * kSearchChunk + threadIdx.x; j < nn && j < (c + 1) * kSearchChunk;
         j += kThreads) {
      const int64_t slot = row * L + n + j;
      const int32_t q = b.qneg[slot];
      const double u = static_cast<double>(key[slot]) - off;
      grad[row * L + idx[slot]] = static_cast<A>((b.alpha[br + q] + b.beta[br + q] * u) * inv_n);
    }
  }
}

}  // namespace cuda_detail
}  // namespace rspose
