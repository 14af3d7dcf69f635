#pragma once
// The launch sequence of the CUDA kernels (kernel order, grid sizes, arguments, dtype and mode
// dispatch), written once and templated on how one kernel is launched, so that the host
// emulation in tests/cuda_emu runs exactly the sequence the GPU runs.
//
// A Launch is called as launch(name, kernel, grid, block, args...): it enqueues
// kernel<<<grid, block>>>(args...) and returns "" or the error. rank_sort_cuda.cu passes one
// that uses <<< >>> on the caller's stream. Include after the CUDA headers (or the
// emulation's), like rank_sort_kernels.cuh.
#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>

#include "rank_sort_cuda.h"
#include "rank_sort_kernels.cuh"

namespace rspose {
namespace cuda_detail {

inline std::size_t acc_bytes(int dtype) {
  return dtype == kFloat64 ? sizeof(double) : sizeof(float);
}

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The launch shape for M rows of length L on a device with `t.sms` SMs (see CudaTuning).
inline Plan make_plan(int64_t M, int64_t L, bool exact, std::size_t acc, const CudaTuning& t) {
  const int64_t sms = t.sms > 0 ? t.sms : 1;
  const int64_t ctas = sms * (t.ctas_per_sm > 0 ? t.ctas_per_sm : 1);
  const int64_t bp = bp_for(exact);
  Plan pl{};
  // At most this many pass-A items (if every element were a positive); the plan kernel
  // counts the real ones on the device.
  pl.ctas_a = std::max<int64_t>(1, std::min<int64_t>(M * cdiv(L, bp), ctas));
  // Pass B: warp items per row without a split: a negative and a positive chunk list.
  pl.chunk = 32 * ept_for(acc == sizeof(double) && exact);
  const int64_t chunks = M * (cdiv(L, pl.chunk) + 1);
  const int64_t want = sms * (t.warp_items_per_sm > 0 ? t.warp_items_per_sm : 1);
  int64_t split = 1;
  if (chunks < want && t.max_split > 1) {
    // Few rows (Instance-Sort: one row): split each row's positives so that the GPU fills,
    // with at least 32 positives per split.
    split = std::min<int64_t>({cdiv(want, chunks), t.max_split, cdiv(L, 32)});
    split = std::max<int64_t>(split, 1);
  }
  pl.split = static_cast<int>(split);
  pl.ctas_b = std::max<int64_t>(1, std::min<int64_t>(cdiv(chunks * split, kWarps), ctas));
  return pl;
}

template <typename S, typename A, int MODE, typename Launch>
std::string launch_passes(const Launch& launch, const S* s, const A* y, int64_t M, int64_t L,
                          A delta, A tau, bool need_grad, A* rank, A* sort, int32_t* npos,
                          A* grad, char* ws, const Layout& lay, const Plan& pl) {
  using MT = ModeTraits<MODE>;
  int32_t* nkeep = reinterpret_cast<int32_t*>(ws + lay.nkeep);
  A* key = reinterpret_cast<A*>(ws + lay.key);
  A* plab = reinterpret_cast<A*>(ws + lay.plab);
  int32_t* idx = reinterpret_cast<int32_t*>(ws + lay.idx);
  int64_t* a_off = reinterpret_cast<int64_t*>(ws + lay.a_off);
  int64_t* b_off = reinterpret_cast<int64_t*>(ws + lay.b_off);
  A* partials = reinterpret_cast<A*>(ws + lay.partials);
  A* coef = reinterpret_cast<A*>(ws + lay.coef);
  A* gpart = reinterpret_cast<A*>(ws + lay.gpart);
  const Step<A> p{delta, MT::hard ? A(0) : A(1) / (A(2) * delta)};
  const unsigned gx = static_cast<unsigned>(M < INT_MAX ? M : INT_MAX);
  const dim3 block(kThreads);

  std::string err = launch("compact_kernel", compact_kernel<S, A>, dim3(gx), block, s, y, M, L,
                           tau, delta, need_grad, npos, nkeep, key, plab, idx, grad);
  if (!err.empty()) return err;
  err = launch("plan_kernel", plan_kernel, dim3(1), block, M, MT::bp, pl.split, pl.chunk, npos,
               nkeep, a_off, b_off);
  if (!err.empty()) return err;
  if (L > 0) {
    err = launch("pass_a_kernel", pass_a_kernel<A, MODE>, dim3(static_cast<unsigned>(pl.ctas_a)),
                 block, M, L, p, need_grad, npos, nkeep, key, plab, a_off, partials, coef);
    if (!err.empty()) return err;
  }
  const int64_t rb = cdiv(M, kThreads);
  const dim3 grid_rows(static_cast<unsigned>(rb < INT_MAX ? rb : INT_MAX));
  err = launch("rows_kernel", rows_kernel<A>, grid_rows, block, M, L, MT::bp, npos, partials,
               rank, sort);
  if (!err.empty()) return err;

  if (need_grad && L > 0) {
    err = launch("pass_b_kernel", pass_b_kernel<A, MODE>, dim3(static_cast<unsigned>(pl.ctas_b)),
                 block, M, L, p, pl.split, npos, nkeep, key, plab, idx, b_off, coef, grad, gpart);
    if (!err.empty()) return err;
    if (pl.split > 1) {
      const int64_t fb = std::min<int64_t>(cdiv(M * L, kThreads), pl.ctas_b * 4);
      err = launch("finish_kernel", finish_kernel<A, MODE>, dim3(static_cast<unsigned>(fb)),
                   block, M, L, pl.split, npos, nkeep, idx, coef, gpart, grad);
      if (!err.empty()) return err;
    }
  }
  return std::string();
}

template <typename S, typename A, typename Launch>
std::string launch_typed(const Launch& launch, const void* scores, const void* labels, int64_t M,
                         int64_t L, double delta, double pos_thr, bool exact, bool need_grad,
                         void* rank, void* sort, int32_t* npos, void* grad, char* ws,
                         const Layout& lay, const Plan& pl) {
  const S* s = static_cast<const S*>(scores);
  const A* y = static_cast<const A*>(labels);
  A* rk = static_cast<A*>(rank);
  A* so = static_cast<A*>(sort);
  A* g = static_cast<A*>(grad);
  const A d = static_cast<A>(delta), tau = static_cast<A>(pos_thr);
  if (exact)
    return launch_passes<S, A, kExact>(launch, s, y, M, L, d, tau, need_grad, rk, so, npos, g, ws,
                                       lay, pl);
  if (delta > 0)
    return launch_passes<S, A, kSmooth>(launch, s, y, M, L, d, tau, need_grad, rk, so, npos, g,
                                        ws, lay, pl);
  return launch_passes<S, A, kHard>(launch, s, y, M, L, d, tau, need_grad, rk, so, npos, g, ws,
                                    lay, pl);
}

// Every launch for M > 0 rows; the workspace `ws` is carved by `lay` (make_layout with
// acc_bytes(dtype), exact, need_grad). Argument meaning as in rank_sort_cuda.h.
template <typename Launch>
std::string launch_all(const Launch& launch, const void* scores, const void* labels, int64_t M,
                       int64_t L, int dtype, double delta, double pos_thr, bool exact,
                       bool need_grad, void* rank, void* sort, int32_t* npos, void* grad,
                       char* ws, const Layout& lay, const Plan& pl) {
  switch (dtype) {
    case kFloat32:
      return launch_typed<float, float>(launch, scores, labels, M, L, delta, pos_thr, exact,
                                        need_grad, rank, sort, npos, grad, ws, lay, pl);
    case kFloat64:
      return launch_typed<double, double>(launch, scores, labels, M, L, delta, pos_thr, exact,
                                          need_grad, rank, sort, npos, grad, ws, lay, pl);
    case kFloat16:
      return launch_typed<__half, float>(launch, scores, labels, M, L, delta, pos_thr, exact,
                                         need_grad, rank, sort, npos, grad, ws, lay, pl);
    case kBFloat16:
      return launch_typed<__nv_bfloat16, float>(launch, scores, labels, M, L, delta, pos_thr,
                                                exact, need_grad, rank, sort, npos, grad, ws, lay,
                                                pl);
    default:
      return "unknown dtype code " + std::to_string(dtype);
  }
}

}  // namespace cuda_detail
}  // namespace rspose
