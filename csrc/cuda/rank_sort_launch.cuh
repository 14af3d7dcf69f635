#pragma once
// The launch sequence of the CUDA kernels (kernel order, grid sizes, arguments, dtype and mode
// dispatch), written once and templated on how one kernel is launched, so that the host
// emulation in tests/cuda_emu runs exactly the sequence the GPU runs.
//
// A Launch is called as launch(name, kernel, grid, block, args...): it enqueues
// kernel<<<grid, block>>>(args...) and returns "" or the error. rank_sort_cuda.cu passes one
// that uses <<< >>> on the caller's stream. Include after the CUDA headers (or the
// emulation's), like rank_sort_kernels.cuh.
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>

#include "rank_sort_kernels.cuh"

namespace rspose {
namespace cuda_detail {

inline std::size_t acc_bytes(int dtype) {
  return dtype == kFloat64 ? sizeof(double) : sizeof(float);
}

template <typename S, typename A, int MODE, typename Launch>
std::string launch_passes(const Launch& launch, const S* s, const A* y, int64_t M, int64_t L,
                          A delta, A tau, bool need_grad, A* rank, A* sort, int32_t* npos,
                          A* grad, char* ws, const Layout& lay) {
  using MT = ModeTraits<MODE>;
  A* smin = reinterpret_cast<A*>(ws + lay.smin);
  int32_t* pos_idx = reinterpret_cast<int32_t*>(ws + lay.pos_idx);
  A* partials = reinterpret_cast<A*>(ws + lay.partials);
  A* coef = reinterpret_cast<A*>(ws + lay.coef);
  A* self = reinterpret_cast<A*>(ws + lay.self);
  const Step<A> p{delta, MT::hard ? A(0) : A(1) / (A(2) * delta)};
  const unsigned gx = static_cast<unsigned>(M < INT_MAX ? M : INT_MAX);

  std::string err = launch("compact_kernel", compact_kernel<S, A>, dim3(gx), dim3(kThreads), s,
                           y, M, L, tau, npos, smin, pos_idx);
  if (!err.empty()) return err;

  if (L > 0) {
    const int64_t nba = (L + MT::bp - 1) / MT::bp;
    const dim3 grid_a(gx, static_cast<unsigned>(nba < kMaxGridY ? nba : kMaxGridY));
    err = launch("pass_a_kernel", pass_a_kernel<S, A, MODE>, grid_a, dim3(kThreads), s, y, M, L,
                 tau, p, need_grad, npos, pos_idx, partials, coef, self);
    if (!err.empty()) return err;
  }

  const int64_t rb = (M + 255) / 256;
  err = launch("rows_kernel", rows_kernel<A>, dim3(static_cast<unsigned>(rb < INT_MAX ? rb : INT_MAX)),
               dim3(256), M, L, MT::bp, npos, partials, rank, sort);
  if (!err.empty()) return err;

  if (need_grad && L > 0) {
    const int64_t nbe = (L + kBE - 1) / kBE;
    const dim3 grid_b(gx, static_cast<unsigned>(nbe < kMaxGridY ? nbe : kMaxGridY));
    err = launch("pass_b_kernel", pass_b_kernel<S, A, MODE>, grid_b, dim3(kThreads), s, y, M, L,
                 tau, p, npos, smin, pos_idx, coef, self, grad);
    if (!err.empty()) return err;
  }
  return std::string();
}

template <typename S, typename A, typename Launch>
std::string launch_typed(const Launch& launch, const void* scores, const void* labels, int64_t M,
                         int64_t L, double delta, double pos_thr, bool exact, bool need_grad,
                         void* rank, void* sort, int32_t* npos, void* grad, char* ws,
                         const Layout& lay) {
  const S* s = static_cast<const S*>(scores);
  const A* y = static_cast<const A*>(labels);
  A* rk = static_cast<A*>(rank);
  A* so = static_cast<A*>(sort);
  A* g = static_cast<A*>(grad);
  const A d = static_cast<A>(delta), tau = static_cast<A>(pos_thr);
  if (exact)
    return launch_passes<S, A, kExact>(launch, s, y, M, L, d, tau, need_grad, rk, so, npos, g, ws,
                                       lay);
  if (delta > 0)
    return launch_passes<S, A, kSmooth>(launch, s, y, M, L, d, tau, need_grad, rk, so, npos, g,
                                        ws, lay);
  return launch_passes<S, A, kHard>(launch, s, y, M, L, d, tau, need_grad, rk, so, npos, g, ws,
                                    lay);
}

// Every launch for M > 0 rows; the workspace `ws` is carved by `lay` (make_layout with
// acc_bytes(dtype), exact, need_grad). Argument meaning as in rank_sort_cuda.h.
template <typename Launch>
std::string launch_all(const Launch& launch, const void* scores, const void* labels, int64_t M,
                       int64_t L, int dtype, double delta, double pos_thr, bool exact,
                       bool need_grad, void* rank, void* sort, int32_t* npos, void* grad,
                       char* ws, const Layout& lay) {
  switch (dtype) {
    case kFloat32:
      return launch_typed<float, float>(launch, scores, labels, M, L, delta, pos_thr, exact,
                                        need_grad, rank, sort, npos, grad, ws, lay);
    case kFloat64:
      return launch_typed<double, double>(launch, scores, labels, M, L, delta, pos_thr, exact,
                                          need_grad, rank, sort, npos, grad, ws, lay);
    case kFloat16:
      return launch_typed<__half, float>(launch, scores, labels, M, L, delta, pos_thr, exact,
                                         need_grad, rank, sort, npos, grad, ws, lay);
    case kBFloat16:
      return launch_typed<__nv_bfloat16, float>(launch, scores, labels, M, L, delta, pos_thr,
                                                exact, need_grad, rank, sort, npos, grad, ws, lay);
    default:
      return "unknown dtype code " + std::to_string(dtype);
  }
}

}  // namespace cuda_detail
}  // namespace rspose
