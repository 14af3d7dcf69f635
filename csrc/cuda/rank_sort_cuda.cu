// CUDA kernels of the Rank & Sort core (SPEC §5, docs/MATH.md), per-pair math from
// csrc/rank_sort_math.h. Four launches on the caller's stream, sized from M and L only (the
// sequence is in rank_sort_launch.cuh, shared with the host emulation of tests/cuda_emu):
//
//   compact   one CTA per row: ballot/popc scan of y > τ → positive indices in index order,
//             the row's positive count and its minimum positive score. No host sync: the
//             counts stay on the device and later kernels read them.
//   pass A    CTA = (row, block of BP positives); warps own PPW positives each (in
//             registers) and all lanes stream the row through a shared-memory tile, lane ℓ
//             taking elements ℓ, ℓ+32, ...; a tile whose elements all lie below the block's
//             minimum positive score − δ is skipped (pruning). Butterfly warp reductions then
//             give each positive its sums; the pass-B coefficients go to the workspace and
//             each CTA's Σ ℓR, Σ eS to a per-CTA partial. CTAs past the row's count exit.
//   rows      one thread per row sums its partials in block order → rank, sort.
//   pass B    CTA = (row, block of BE elements), EPT elements per thread; positives (and
//             their coefficients) stream through shared memory in index order, so each
//             gradient is one thread's sequential sum. Blocks of prunable negatives only
//             write zeros.
//
// No floating-point atomics anywhere and every sum has a fixed order: same input, same bits.
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

std::size_t cuda_workspace_bytes(int64_t M, int64_t L, int dtype, bool exact, bool need_grad) {
  if (M <= 0) return 0;
  return make_layout(M, L, acc_bytes(dtype), exact, need_grad).total;
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // consume the error so it is not reported by a later launch check
    return 0;
  }
  return n;
}

std::string rank_sort_cuda(const void* scores, const void* labels, int64_t M, int64_t L,
                           int dtype, double delta, double pos_thr, bool exact, bool need_grad,
                           void* rank, void* sort, int32_t* npos, void* grad, void* workspace,
                           std::size_t workspace_bytes, void* stream, int device) {
  if (M <= 0) return std::string();
  const Layout lay = make_layout(M, L, acc_bytes(dtype), exact, need_grad);
  if (workspace_bytes < lay.total) return "workspace too small";
  // Launch on the tensors' device; put the caller's current device back afterwards.
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) return launch_error("cudaGetDevice");
  if (prev != device && cudaSetDevice(device) != cudaSuccess) return launch_error("cudaSetDevice");
  cudaGetLastError();  // start from a clean error state
  const std::string err =
      launch_all(StreamLaunch{static_cast<cudaStream_t>(stream)}, scores, labels, M, L, dtype,
                 delta, pos_thr, exact, need_grad, rank, sort, npos, grad,
                 static_cast<char*>(workspace), lay);
  if (prev != device && prev >= 0) cudaSetDevice(prev);
  return err;
}

}  // namespace rspose
