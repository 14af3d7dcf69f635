#pragma once
// The CUDA kernels of the Rank & Sort core; see rank_sort_launch.cuh for the launch sequence.
// Include after <cuda_runtime.h>, <cuda_fp16.h> and <cuda_bf16.h>. Free of nvcc's <<< >>>, so
// g++ can also compile them against the host emulation of tests/cuda_emu (no GPU needed).
#include <climits>
#include <cstdint>

#include "../dtypes.h"
#include "../rank_sort_math.h"

namespace rspose {
namespace cuda_detail {

constexpr int kThreads = 256;            // every kernel but `rows`
constexpr int kWarps = kThreads / 32;
constexpr int kTile = kThreads;          // pass-A tile: one element per thread
constexpr int kEPT = 4;                  // pass-B elements per thread
constexpr int kBE = kThreads * kEPT;     // pass-B elements per CTA
constexpr int kTP = kThreads;            // pass-B positives per shared-memory tile
constexpr unsigned kFull = 0xffffffffu;
constexpr int kMaxGridY = 65535;

enum Mode { kSmooth = 0, kHard = 1, kExact = 2 };

template <int MODE>
struct ModeTraits {
  static constexpr bool exact = MODE == kExact;
  static constexpr bool hard = MODE == kHard;
  // Positives per warp: fewer in exact mode, which carries twice the accumulators.
  static constexpr int ppw = exact ? 4 : 8;
  static constexpr int bp = kWarps * ppw;  // positives per pass-A CTA
  static constexpr int k = exact ? 5 : 2;  // pass-B coefficients per positive
};

__host__ __device__ inline int bp_for(bool exact) {
  return exact ? ModeTraits<kExact>::bp : ModeTraits<kSmooth>::bp;
}

// Scores of any dtype, read as the accumulation type.
template <typename A, typename S>
__device__ __forceinline__ A load_acc(const S* p) { return static_cast<A>(*p); }
template <>
__device__ __forceinline__ float load_acc<float, __half>(const __half* p) {
  return __half2float(*p);
}
template <>
__device__ __forceinline__ float load_acc<float, __nv_bfloat16>(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

template <typename S, typename A>
__device__ __forceinline__ S to_scalar(A v) { return static_cast<S>(v); }
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
__device__ __forceinline__ A inf_value() { return static_cast<A>(INFINITY); }

// Workspace carving, identical on host and device sides.
struct Layout {
  size_t smin, pos_idx, partials, coef, self, total;
};

__host__ __device__ inline size_t align_up(size_t x) { return (x + 255) / 256 * 256; }

inline Layout make_layout(int64_t M, int64_t L, size_t acc_bytes, bool exact, bool need_grad) {
  const size_t m = static_cast<size_t>(M), l = static_cast<size_t>(L);
  const size_t nba = (l + bp_for(exact) - 1) / bp_for(exact);
  const size_t k = exact ? ModeTraits<kExact>::k : ModeTraits<kSmooth>::k;
  Layout w{};
  size_t off = 0;
  w.smin = off;     off = align_up(off + m * acc_bytes);
  w.pos_idx = off;  off = align_up(off + m * l * sizeof(int32_t));
  w.partials = off; off = align_up(off + m * nba * 2 * acc_bytes);
  w.coef = off;     off = align_up(off + (need_grad ? m * k * l * acc_bytes : 0));
  w.self = off;     off = align_up(off + (need_grad ? m * l * acc_bytes : 0));
  w.total = off;
  return w;
}

// ---------------------------------------------------------------------------------------
// compact: positives of each row in index order, their count and minimum score.
template <typename S, typename A>
__global__ void __launch_bounds__(kThreads)
compact_kernel(const S* __restrict__ s, const A* __restrict__ y, int64_t M, int64_t L, A tau,
               int32_t* __restrict__ npos, A* __restrict__ smin, int32_t* __restrict__ pos_idx) {
  __shared__ int32_t warp_count[kWarps];
  __shared__ A warp_min[kWarps];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int64_t row = blockIdx.x; row < M; row += gridDim.x) {
    const S* sr = s + row * L;
    const A* yr = y + row * L;
    int32_t* out = pos_idx + row * L;
    int32_t base = 0;  // positives before this chunk; the same value in every thread
    A m = inf_value<A>();
    for (int64_t c0 = 0; c0 < L; c0 += kThreads) {
      const int64_t j = c0 + tid;
      const bool flag = j < L && yr[j] > tau;
      if (flag) m = nan_min(load_acc<A>(sr + j), m);
      const unsigned ballot = __ballot_sync(kFull, flag);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int32_t before = 0, total = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const int32_t c = warp_count[w];
        before += w < warp ? c : 0;
        total += c;
      }
      if (flag) out[base + before + __popc(ballot & ((1u << lane) - 1u))] = static_cast<int32_t>(j);
      base += total;
      __syncthreads();  // warp_count is rewritten by the next chunk
    }
    m = warp_nan_min(m);
    if (lane == 0) warp_min[warp] = m;
    __syncthreads();
    if (tid == 0) {
      A r = warp_min[0];
      for (int w = 1; w < kWarps; ++w) r = nan_min(warp_min[w], r);
      smin[row] = r;
      npos[row] = base;
    }
    __syncthreads();  // warp_min is rewritten by the next row
  }
}

// ---------------------------------------------------------------------------------------
// pass A
template <typename S, typename A, int MODE>
__global__ void __launch_bounds__(kThreads)
pass_a_kernel(const S* __restrict__ s, const A* __restrict__ y, int64_t M, int64_t L, A tau,
              Step<A> p, bool need_grad, const int32_t* __restrict__ npos,
              const int32_t* __restrict__ pos_idx, A* __restrict__ partials,
              A* __restrict__ coef, A* __restrict__ self_out) {
  using MT = ModeTraits<MODE>;
  constexpr int PPW = MT::ppw, BP = MT::bp, K = MT::k;
  __shared__ A tile_s[kTile];
  __shared__ A tile_y[kTile];
  __shared__ A warp_min[kWarps];
  __shared__ A blk_lr[BP];
  __shared__ A blk_es[BP];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t nba = (L + BP - 1) / BP;

  for (int64_t row = blockIdx.x; row < M; row += gridDim.x) {
    const int32_t n = npos[row];  // uniform over the CTA: the loop below is too
    const S* sr = s + row * L;
    const A* yr = y + row * L;
    const int32_t* pr = pos_idx + row * L;
    for (int64_t b = blockIdx.y; b * BP < n; b += gridDim.y) {
      // This warp's positives k0 .. k0+PPW-1; slots past n repeat the last positive (their
      // results are dropped), so every register holds a real score.
      const int64_t k0 = b * BP + warp * PPW;
      const bool warp_active = k0 < n;
      A si[PPW], yi[PPW];
      A wmin = inf_value<A>();
#pragma unroll
      for (int q = 0; q < PPW; ++q) {
        const int64_t k = k0 + q < n ? k0 + q : n - 1;
        const int32_t j = pr[k];
        si[q] = load_acc<A>(sr + j);
        yi[q] = yr[j];
        if (k0 + q < n) wmin = nan_min(si[q], wmin);
      }
      if (lane == 0) warp_min[warp] = wmin;
      __syncthreads();
      A bmin = warp_min[0];
#pragma unroll
      for (int w = 1; w < kWarps; ++w) bmin = nan_min(warp_min[w], bmin);
      const A thr = bmin - p.delta;  // NaN (from a NaN positive) prunes nothing

      SumsA<A> acc[PPW], dacc[PPW];
#pragma unroll
      for (int q = 0; q < PPW; ++q) {
        acc[q] = sums_zero<A>();
        dacc[q] = sums_zero<A>();
      }
      for (int64_t t0 = 0; t0 < L; t0 += kTile) {
        const int64_t j = t0 + tid;
        const bool in = j < L;
        const A sv = in ? load_acc<A>(sr + j) : A(0);
        tile_s[tid] = sv;
        tile_y[tid] = in ? yr[j] : A(0);
        // Barrier and vote at once: skip the tile when no element can reach the block.
        const int keep = __syncthreads_or(in && !prunable(sv, thr));
        if (keep && warp_active) {
          const int cnt = L - t0 < kTile ? static_cast<int>(L - t0) : kTile;
          for (int e = lane; e < cnt; e += 32) {
            const A sj = tile_s[e], yj = tile_y[e];
            const bool pos = yj > tau;
            const A wj = A(1) - yj;
#pragma unroll
            for (int q = 0; q < PPW; ++q) {
              const A x = sj - si[q];
              const bool ge = yj >= yi[q];
              accumulate_a(acc[q], step<A, MT::hard>(x, p), pos, ge, wj);
              if (MT::exact) accumulate_a(dacc[q], step_slope(x, p), pos, ge, wj);
            }
          }
        }
        __syncthreads();  // the tile is rewritten next iteration
      }

#pragma unroll
      for (int q = 0; q < PPW; ++q) {
        acc[q] = warp_sum(acc[q]);
        if (MT::exact) dacc[q] = warp_sum(dacc[q]);
      }
      if (lane == 0) {
#pragma unroll
        for (int q = 0; q < PPW; ++q) {
          const int64_t k = k0 + q;
          A lr = A(0), es = A(0);
          if (k < n) {
            const int64_t j = pr[k];
            A c[5] = {A(0), A(0), A(0), A(0), A(0)};
            A self = A(0);
            if (MT::exact) {
              const ExactCoef<A> e = finish_exact(acc[q], dacc[q]);
              lr = e.lr; es = e.es;
              c[0] = e.dF; c[1] = e.dA; c[2] = e.dC; c[3] = e.dT; c[4] = e.dD;
              self = e.self;
            } else {
              const IdentityCoef<A> e = finish_identity(acc[q]);
              lr = e.lr; es = e.es;
              c[0] = e.r; c[1] = e.q;
              self = e.self;
            }
            if (need_grad) {
#pragma unroll
              for (int i = 0; i < K; ++i) coef[(row * K + i) * L + k] = c[i];
              self_out[row * L + j] = self;
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
      __syncthreads();  // warp_min, blk_lr, blk_es are rewritten by the next block
    }
  }
}

// ---------------------------------------------------------------------------------------
// rows: rank = Σ ℓR / n, sort = Σ eS / n, summing the pass-A partials in block order.
template <typename A>
__global__ void rows_kernel(int64_t M, int64_t L, int bp, const int32_t* __restrict__ npos,
                            const A* __restrict__ partials, A* __restrict__ rank,
                            A* __restrict__ sort) {
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

// ---------------------------------------------------------------------------------------
// pass B
template <typename S, typename A, int MODE>
__global__ void __launch_bounds__(kThreads)
pass_b_kernel(const S* __restrict__ s, const A* __restrict__ y, int64_t M, int64_t L, A tau,
              Step<A> p, const int32_t* __restrict__ npos, const A* __restrict__ smin,
              const int32_t* __restrict__ pos_idx, const A* __restrict__ coef,
              const A* __restrict__ self_in, A* __restrict__ grad) {
  using MT = ModeTraits<MODE>;
  constexpr int K = MT::k;
  __shared__ A tp_s[kTP];
  __shared__ A tp_y[kTP];
  __shared__ A tp_c[K][kTP];
  const int tid = threadIdx.x;

  for (int64_t row = blockIdx.x; row < M; row += gridDim.x) {
    const int32_t n = npos[row];
    const A thr = smin[row] - p.delta;
    const S* sr = s + row * L;
    const A* yr = y + row * L;
    const int32_t* pr = pos_idx + row * L;
    for (int64_t e0 = static_cast<int64_t>(blockIdx.y) * kBE; e0 < L;
         e0 += static_cast<int64_t>(gridDim.y) * kBE) {
      A sj[kEPT], yj[kEPT], wj[kEPT], g[kEPT];
      bool neg[kEPT];
      bool need = false;
#pragma unroll
      for (int r = 0; r < kEPT; ++r) {
        const int64_t j = e0 + r * kThreads + tid;
        const bool in = j < L;
        sj[r] = in ? load_acc<A>(sr + j) : A(0);
        yj[r] = in ? yr[j] : A(0);
        wj[r] = A(1) - yj[r];
        neg[r] = !(yj[r] > tau);
        g[r] = A(0);
        // Positives never prune (s ≥ smin); a row without positives needs nothing.
        need = need || (in && n > 0 && (!neg[r] || !prunable(sj[r], thr)));
      }
      if (__syncthreads_or(need)) {
        for (int32_t p0 = 0; p0 < n; p0 += kTP) {
          const int cnt = n - p0 < kTP ? n - p0 : kTP;
          if (tid < cnt) {
            const int64_t k = p0 + tid;
            const int32_t j = pr[k];
            tp_s[tid] = load_acc<A>(sr + j);
            tp_y[tid] = yr[j];
#pragma unroll
            for (int i = 0; i < K; ++i) tp_c[i][tid] = coef[(row * K + i) * L + k];
          }
          __syncthreads();
          for (int q = 0; q < cnt; ++q) {
            const A s_i = tp_s[q], y_i = tp_y[q];
#pragma unroll
            for (int r = 0; r < kEPT; ++r) {
              const A x = sj[r] - s_i;
              if constexpr (MT::exact) {
                g[r] += step_slope(x, p) * coef_b_exact(neg[r], yj[r], wj[r], y_i, tp_c[0][q],
                                                        tp_c[1][q], tp_c[2][q], tp_c[3][q],
                                                        tp_c[4][q]);
              } else {
                g[r] += step<A, MT::hard>(x, p) *
                        coef_b_identity(neg[r], yj[r], y_i, tp_c[0][q], tp_c[1][q]);
              }
            }
          }
          __syncthreads();  // the positive tile is rewritten next iteration
        }
      }
      const A nf = A(n > 0 ? n : 1);
#pragma unroll
      for (int r = 0; r < kEPT; ++r) {
        const int64_t j = e0 + r * kThreads + tid;
        if (j < L) {
          A v = A(0);
          if (n > 0) v = neg[r] ? g[r] / nf : (self_in[row * L + j] + g[r]) / nf;
          grad[row * L + j] = v;
        }
      }
    }
  }
}

}  // namespace cuda_detail
}  // namespace rspose
