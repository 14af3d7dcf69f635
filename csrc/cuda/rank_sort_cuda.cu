// CUDA kernels of the Rank & Sort core (SPEC §5, docs/MATH.md), per-pair math from
// csrc/rank_sort_math.h. Four launches on the caller's stream, sized from M and L only:
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
#include "rank_sort_kernels.cuh"

namespace rspose {
namespace {

using namespace cuda_detail;

// ---------------------------------------------------------------------------------------
std::string launch_error(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return std::string();
  return std::string(what) + ": " + cudaGetErrorString(e);
}

template <typename S, typename A, int MODE>
std::string launch_passes(const S* s, const A* y, int64_t M, int64_t L, A delta, A tau,
                          bool need_grad, A* rank, A* sort, int32_t* npos, S* grad, char* ws,
                          const Layout& lay, cudaStream_t st) {
  using MT = ModeTraits<MODE>;
  A* smin = reinterpret_cast<A*>(ws + lay.smin);
  int32_t* pos_idx = reinterpret_cast<int32_t*>(ws + lay.pos_idx);
  A* partials = reinterpret_cast<A*>(ws + lay.partials);
  A* coef = reinterpret_cast<A*>(ws + lay.coef);
  A* self = reinterpret_cast<A*>(ws + lay.self);
  const Step<A> p{delta, MT::hard ? A(0) : A(1) / (A(2) * delta)};
  const unsigned gx = static_cast<unsigned>(M < INT_MAX ? M : INT_MAX);

  compact_kernel<S, A><<<gx, kThreads, 0, st>>>(s, y, M, L, tau, npos, smin, pos_idx);
  std::string err = launch_error("compact_kernel");
  if (!err.empty()) return err;

  if (L > 0) {
    const int64_t nba = (L + MT::bp - 1) / MT::bp;
    const dim3 grid_a(gx, static_cast<unsigned>(nba < kMaxGridY ? nba : kMaxGridY));
    pass_a_kernel<S, A, MODE><<<grid_a, kThreads, 0, st>>>(s, y, M, L, tau, p, need_grad, npos,
                                                           pos_idx, partials, coef, self);
    err = launch_error("pass_a_kernel");
    if (!err.empty()) return err;
  }

  const int64_t rb = (M + 255) / 256;
  rows_kernel<A><<<static_cast<unsigned>(rb < INT_MAX ? rb : INT_MAX), 256, 0, st>>>(
      M, L, MT::bp, npos, partials, rank, sort);
  err = launch_error("rows_kernel");
  if (!err.empty()) return err;

  if (need_grad && L > 0) {
    const int64_t nbe = (L + kBE - 1) / kBE;
    const dim3 grid_b(gx, static_cast<unsigned>(nbe < kMaxGridY ? nbe : kMaxGridY));
    pass_b_kernel<S, A, MODE><<<grid_b, kThreads, 0, st>>>(s, y, M, L, tau, p, npos, smin,
                                                           pos_idx, coef, self, grad);
    err = launch_error("pass_b_kernel");
    if (!err.empty()) return err;
  }
  return std::string();
}

template <typename S, typename A>
std::string launch_typed(const void* scores, const void* labels, int64_t M, int64_t L,
                         double delta, double pos_thr, bool exact, bool need_grad, void* rank,
                         void* sort, int32_t* npos, void* grad, char* ws, const Layout& lay,
                         cudaStream_t st) {
  const S* s = static_cast<const S*>(scores);
  const A* y = static_cast<const A*>(labels);
  A* rk = static_cast<A*>(rank);
  A* so = static_cast<A*>(sort);
  S* g = static_cast<S*>(grad);
  const A d = static_cast<A>(delta), tau = static_cast<A>(pos_thr);
  if (exact)
    return launch_passes<S, A, kExact>(s, y, M, L, d, tau, need_grad, rk, so, npos, g, ws, lay, st);
  if (delta > 0)
    return launch_passes<S, A, kSmooth>(s, y, M, L, d, tau, need_grad, rk, so, npos, g, ws, lay, st);
  return launch_passes<S, A, kHard>(s, y, M, L, d, tau, need_grad, rk, so, npos, g, ws, lay, st);
}

size_t acc_bytes(int dtype) { return dtype == kFloat64 ? sizeof(double) : sizeof(float); }

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
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  char* ws = static_cast<char*>(workspace);
  std::string err;
  switch (dtype) {
    case kFloat32:
      err = launch_typed<float, float>(scores, labels, M, L, delta, pos_thr, exact, need_grad,
                                       rank, sort, npos, grad, ws, lay, st);
      break;
    case kFloat64:
      err = launch_typed<double, double>(scores, labels, M, L, delta, pos_thr, exact, need_grad,
                                         rank, sort, npos, grad, ws, lay, st);
      break;
    case kFloat16:
      err = launch_typed<__half, float>(scores, labels, M, L, delta, pos_thr, exact, need_grad,
                                        rank, sort, npos, grad, ws, lay, st);
      break;
    case kBFloat16:
      err = launch_typed<__nv_bfloat16, float>(scores, labels, M, L, delta, pos_thr, exact,
                                               need_grad, rank, sort, npos, grad, ws, lay, st);
      break;
    default:
      err = "unknown dtype code " + std::to_string(dtype);
  }
  if (prev != device && prev >= 0) cudaSetDevice(prev);
  return err;
}

}  // namespace rspose
