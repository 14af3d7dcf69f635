#pragma once
// The one argument struct of the native boundary (the FlashAttention Flash_fwd_params
// pattern): rspose_kernels/backends/native.py fills a RankSortParams, bindings.cpp checks it
// once (validate_params) and every layer below takes it by const reference: the CPU kernel
// (cpu_entry -> rank_sort_cpu -> run) and the CUDA launcher (rank_sort_cuda -> launch_all ->
// launch_passes). Also here: the one static switch over score dtype x mode that both use.
// Plain C++ (no CUDA headers), so bindings.cpp compiles with the host compiler alone.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "dtypes.h"
#include "rank_sort_bucketed_math.h"  // CostModel, Algorithm

namespace rspose {

// Launch parameters of the CUDA kernels, chosen on the host from the device (never from the
// data). native.py fills them from the SM count and the RSPOSE_CUDA_* environment variables,
// so bench/gpu_check.sh can sweep what only a GPU measurement can settle.
struct CudaTuning {
  int sms = 132;               // streaming multiprocessors of the device
  int ctas_per_sm = 4;         // persistent pass-A / pass-B grid: CTAs per SM
  int warp_items_per_sm = 16;  // pass B splits rows' positives until about this many warp
                               // items per SM exist (only when there are few rows)
  int max_split = 32;          // ... into at most this many parts
};

// One call of the Rank & Sort core (contract: rspose_kernels/backends/__init__.py).
// All arrays are contiguous and on the call's device.
struct RankSortParams {
  // Inputs: scores [M, L] of `dtype`; labels [M, L] in the accumulation type (float64 for
  // kFloat64 scores, float32 otherwise; the CPU kernel takes float32/float64 scores only).
  const void* scores = nullptr;
  const void* labels = nullptr;
  int64_t M = 0, L = 0;
  int dtype = kFloat32;  // DType code of the scores
  double delta = 0.0;    // ramp half-width δ ≥ 0 (δ = 0: the step)
  double pos_thr = 0.0;  // labels above it are the positives
  bool exact = false;    // exact gradient (δ > 0) rather than the identity update
  bool need_grad = false;
  // Outputs: rank, sort [M] in the accumulation type; npos [M] int32; grad [M, L] in the
  // accumulation type, written only when need_grad (may be null otherwise).
  void* rank = nullptr;
  void* sort = nullptr;
  int32_t* npos = nullptr;
  void* grad = nullptr;
  // Algorithm (every row pairwise, every row that can be bucketed, or per row by `cost`).
  int algorithm = kPairwise;
  CostModel cost{0.0, 0.0, 1.0, 0.0};
  // CPU only: threads (results are bitwise independent of it).
  int num_threads = 1;
  // CUDA only: the device workspace (cuda_workspace_bytes), the cudaStream_t, the device.
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  void* stream = nullptr;
  int device = 0;
  CudaTuning tuning{};
};

// The three instantiations of the kernels: the smooth ramp (δ > 0), the step (δ = 0), and
// the exact gradient. The values are the kernels' MODE template argument.
enum Mode : int { kSmooth = 0, kHard = 1, kExact = 2 };

inline Mode mode_of(const RankSortParams& p) {
  return p.exact ? kExact : (p.delta > 0 ? kSmooth : kHard);
}

template <typename T>
struct TypeTag {
  using type = T;
};
template <int MODE>
using ModeTag = std::integral_constant<int, MODE>;

namespace detail {
template <typename S, typename A, typename F>
void with_mode(const RankSortParams& p, F&& f) {
  switch (mode_of(p)) {
    case kExact:
      f(TypeTag<S>{}, TypeTag<A>{}, ModeTag<kExact>{});
      break;
    case kSmooth:
      f(TypeTag<S>{}, TypeTag<A>{}, ModeTag<kSmooth>{});
      break;
    default:
      f(TypeTag<S>{}, TypeTag<A>{}, ModeTag<kHard>{});
      break;
  }
}
}  // namespace detail

// The dtype x mode switch: calls f(TypeTag<S>, TypeTag<A>, ModeTag<MODE>) with the score type
// S of p.dtype, its accumulation type A and the mode. Half / BFloat16 are that side's half
// types (__half and __nv_bfloat16 in CUDA code); void where there are none (the CPU kernel).
// Returns false, calling nothing, for a dtype this side has no type for.
template <typename Half = void, typename BFloat16 = void, typename F>
bool dispatch_dtype_mode(const RankSortParams& p, F&& f) {
  switch (p.dtype) {
    case kFloat32:
      detail::with_mode<float, float>(p, f);
      return true;
    case kFloat64:
      detail::with_mode<double, double>(p, f);
      return true;
    case kFloat16:
      if constexpr (!std::is_void_v<Half>) {
        detail::with_mode<Half, float>(p, f);
        return true;
      }
      return false;
    case kBFloat16:
      if constexpr (!std::is_void_v<BFloat16>) {
        detail::with_mode<BFloat16, float>(p, f);
        return true;
      }
      return false;
    default:
      return false;
  }
}

}  // namespace rspose
