// CUDA kernels of the Rank & Sort core (docs/DESIGN.md §5, docs/MATH.md), per-pair math from
// csrc/rank_sort_math.h. Six launches on the caller's stream (eleven when the call may take
// the bucketed algorithm), sized from M, L and the SM count only (the sequence is in
// rank_sort_launch.cuh, shared with the host emulation of tests/cuda_emu):
//
//   compact   one CTA per row: the positive count and lowest score, then ballot/popc scans
//             that compact the row: positives (score, label, index) in slots [0, n), the
//             negatives pruning cannot skip in [n, n + k); pruned elements get gradient 0.
//             It also chooses the row's algorithm, pairwise or bucketed, from its counts.
//   bucket_*  (bucketed rows; rank_sort_bucketed_kernels.cuh) sort, search, scan: each
//             positive's F_i from a histogram of the negatives over its breakpoints.
//   plan      one CTA: per-row item counts prefix-summed on the device (pass A: blocks of
//             positives; pass B: warp chunks), so no host sync sizes anything.
//   pass A    a fixed grid looping over the items (row, block of BP positives): warps own
//             PPW positives in registers; the kept negatives stream through shared memory
//             for F alone, then the positives for T, Z, C, D. Butterfly warp reductions give
//             each positive its sums → pass-B coefficients, and each item's Σ ℓR, Σ eS.
//   rows      one thread per row sums its partials in block order → rank, sort.
//   pass B    a fixed grid of warps looping over warp items (row, split, chunk of 256 slots):
//             8 slots per lane, the positives broadcast by shuffles, one sequential sum per
//             slot; rows with few items split their positives over several warps.
//   finish    (split rows only) the splits' partial sums added in split order.
//   bucket_*  (bucketed rows) coef, grad: each negative's gradient α[q] + β[q]·s.
//
// No floating-point atomics anywhere and every sum has a fixed order (or is an integer sum):
// same input, same bits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include "rank_sort_cuda.h"
#include "rank_sort_launch.cuh"

namespace rspose {
namespace {

using namespace cuda_detail;

std::string launch_error(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return std::string();
  return std::string(what) + ": " + cudaGetErrorString(e);
}

// The Launch of rank_sort_launch.cuh: <<< >>> on the caller's stream.
struct StreamLaunch {
  cudaStream_t stream;
  template <typename... P, typename... Args>
  std::string operator()(const char* name, void (*kernel)(P...), dim3 grid, dim3 block,
                         Args... args) const {
    kernel<<<grid, block, 0, stream>>>(args...);
    return launch_error(name);
  }
};

}  // namespace

CudaPlan cuda_plan(int64_t M, int64_t L, int dtype, bool exact, const CudaTuning& tuning) {
  const Plan pl = make_plan(M, L, exact, acc_bytes(dtype), tuning);
  return CudaPlan{pl.ctas_a, pl.ctas_b, pl.split};
}

std::size_t cuda_workspace_bytes(const RankSortParams& p) {
  if (p.M <= 0) return 0;
  const Plan pl = make_plan(p.M, p.L, p.exact, acc_bytes(p.dtype), p.tuning);
  return make_layout(p.M, p.L, acc_bytes(p.dtype), p.exact, p.need_grad, pl.split,
                     p.algorithm != kPairwise)
      .total;
}

int64_t cuda_max_positives(int64_t L, int dtype) {
  return np_cap(L, static_cast<int64_t>(acc_bytes(dtype)));
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // consume the error so it is not reported by a later launch check
    return 0;
  }
  return n;
}

std::string rank_sort_cuda(const RankSortParams& p) {
  if (p.M <= 0) return std::string();
  const Plan pl = make_plan(p.M, p.L, p.exact, acc_bytes(p.dtype), p.tuning);
  const Layout lay = make_layout(p.M, p.L, acc_bytes(p.dtype), p.exact, p.need_grad, pl.split,
                                 p.algorithm != kPairwise);
  if (p.workspace_bytes < lay.total) return "workspace too small";
  // Launch on the tensors' device; put the caller's current device back afterwards.
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) return launch_error("cudaGetDevice");
  if (prev != p.device && cudaSetDevice(p.device) != cudaSuccess)
    return launch_error("cudaSetDevice");
  cudaGetLastError();  // start from a clean error state
  const std::string err = launch_all(StreamLaunch{static_cast<cudaStream_t>(p.stream)}, p, lay, pl);
  if (prev != p.device && prev >= 0) cudaSetDevice(prev);
  return err;
}

}  // namespace rspose
