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
#include "rank_sort_bucketed_kernels.cuh"

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
  pl.ctas = ctas;
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

template <typename A>
BucketWs<A> bucket_ws(char* ws, const Layout& lay) {
  BucketWs<A> b{};
  if (!lay.buckets) return b;
  b.bsel = reinterpret_cast<int32_t*>(ws + lay.bsel);
  b.boff = reinterpret_cast<double*>(ws + lay.boff);
  b.bfix = reinterpret_cast<double*>(ws + lay.bfix);
  b.sorder = reinterpret_cast<int32_t*>(ws + lay.sorder);
  b.ql = reinterpret_cast<int32_t*>(ws + lay.ql);
  b.qh = reinterpret_cast<int32_t*>(ws + lay.qh);
  b.key = reinterpret_cast<double*>(ws + lay.bkey);
  b.lob = reinterpret_cast<int32_t*>(ws + lay.lob);
  b.hcnt = reinterpret_cast<int32_t*>(ws + lay.hcnt);
  b.hsum = reinterpret_cast<unsigned long long*>(ws + lay.hsum);
  b.qneg = reinterpret_cast<int32_t*>(ws + lay.qneg);
  b.fb = reinterpret_cast<A*>(ws + lay.fb);
  b.fbd = reinterpret_cast<A*>(ws + lay.fbd);
  b.pre = reinterpret_cast<double*>(ws + lay.pre);
  b.alpha = reinterpret_cast<double*>(ws + lay.alpha);
  b.beta = reinterpret_cast<double*>(ws + lay.beta);
  b.np = lay.np;
  b.nb = lay.nb;
  return b;
}

// The bucketed kernels' grids: one CTA per row (rows_grid) or per item of kSearchChunk
// negatives (chunks_grid), capped at the persistent grid; every kernel grid-strides.
inline dim3 rows_grid(int64_t M, const Plan& pl) {
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(M, pl.ctas))));
}
inline dim3 chunks_grid(int64_t M, int64_t L, const Plan& pl) {
  const int64_t items = M * cdiv(L, kSearchChunk);
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(items, 4 * pl.ctas))));
}

template <typename S, typename A, int MODE, typename Launch>
std::string launch_passes(const Launch& launch, const S* s, const A* y, int64_t M, int64_t L,
                          A delta, A tau, bool need_grad, A* rank, A* sort, int32_t* npos,
                          A* grad, char* ws, const Layout& lay, const Plan& pl, int algorithm,
                          CostModel cost) {
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
  const BucketWs<A> bw = bucket_ws<A>(ws, lay);
  // The bucketed kernels' δ and 1/(2δ) in double, as the CPU's (rank_sort_bucketed_cpu.h).
  const double dd = static_cast<double>(delta), inv2d = MT::hard ? 0.0 : 0.5 / dd;

  std::string err = launch("compact_kernel", compact_kernel<S, A>, dim3(gx), block, s, y, M, L,
                           tau, delta, need_grad, npos, nkeep, key, plab, idx, grad, algorithm,
                           cost, lay.np, bw.bsel);
  if (!err.empty()) return err;
  if (lay.buckets) {
    err = launch("bucket_sort_kernel", bucket_sort_kernel<A>, rows_grid(M, pl), block, M, L, dd,
                 MT::hard, npos, static_cast<const A*>(key), bw);
    if (!err.empty()) return err;
    err = launch("bucket_search_kernel", bucket_search_kernel<A>, chunks_grid(M, L, pl), block,
                 M, L, MT::hard, npos, static_cast<const A*>(key), bw);
    if (!err.empty()) return err;
    err = launch("bucket_scan_kernel", bucket_scan_kernel<A, MT::exact>, rows_grid(M, pl), block,
                 M, L, inv2d, MT::hard, npos, static_cast<const A*>(key), bw);
    if (!err.empty()) return err;
  }
  err = launch("plan_kernel", plan_kernel, dim3(1), block, M, MT::bp, pl.split, pl.chunk, npos,
               nkeep, a_off, b_off);
  if (!err.empty()) return err;
  if (L > 0) {
    err = launch("pass_a_kernel", pass_a_kernel<A, MODE>, dim3(static_cast<unsigned>(pl.ctas_a)),
                 block, M, L, p, need_grad, npos, nkeep, key, plab, a_off, partials, coef,
                 static_cast<const int32_t*>(bw.bsel), static_cast<const A*>(bw.fb),
                 static_cast<const A*>(bw.fbd), lay.np);
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
    if (lay.buckets) {  // the bucketed rows' negatives
      err = launch("bucket_coef_kernel", bucket_coef_kernel<A, MT::exact>, rows_grid(M, pl),
                   block, M, L, inv2d, MT::hard, npos, static_cast<const A*>(key),
                   static_cast<const A*>(coef), bw);
      if (!err.empty()) return err;
      err = launch("bucket_grad_kernel", bucket_grad_kernel<A>, chunks_grid(M, L, pl), block, M,
                   L, npos, static_cast<const A*>(key), static_cast<const int32_t*>(idx), bw, grad);
      if (!err.empty()) return err;
    }
  }
  return std::string();
}

template <typename S, typename A, typename Launch>
std::string launch_typed(const Launch& launch, const void* scores, const void* labels, int64_t M,
                         int64_t L, double delta, double pos_thr, bool exact, bool need_grad,
                         void* rank, void* sort, int32_t* npos, void* grad, char* ws,
                         const Layout& lay, const Plan& pl, int algorithm, CostModel cost) {
  const S* s = static_cast<const S*>(scores);
  const A* y = static_cast<const A*>(labels);
  A* rk = static_cast<A*>(rank);
  A* so = static_cast<A*>(sort);
  A* g = static_cast<A*>(grad);
  const A d = static_cast<A>(delta), tau = static_cast<A>(pos_thr);
  if (exact)
    return launch_passes<S, A, kExact>(launch, s, y, M, L, d, tau, need_grad, rk, so, npos, g, ws,
                                       lay, pl, algorithm, cost);
  if (delta > 0)
    return launch_passes<S, A, kSmooth>(launch, s, y, M, L, d, tau, need_grad, rk, so, npos, g,
                                        ws, lay, pl, algorithm, cost);
  return launch_passes<S, A, kHard>(launch, s, y, M, L, d, tau, need_grad, rk, so, npos, g, ws,
                                    lay, pl, algorithm, cost);
}

// Every launch for M > 0 rows; the workspace `ws` is carved by `lay` (make_layout with
// acc_bytes(dtype), exact, need_grad). Argument meaning as in rank_sort_cuda.h.
template <typename Launch>
std::string launch_all(const Launch& launch, const void* scores, const void* labels, int64_t M,
                       int64_t L, int dtype, double delta, double pos_thr, bool exact,
                       bool need_grad, void* rank, void* sort, int32_t* npos, void* grad,
                       char* ws, const Layout& lay, const Plan& pl, int algorithm,
                       CostModel cost) {
  switch (dtype) {
    case kFloat32:
      return launch_typed<float, float>(launch, scores, labels, M, L, delta, pos_thr, exact,
                                        need_grad, rank, sort, npos, grad, ws, lay, pl, algorithm, cost);
    case kFloat64:
      return launch_typed<double, double>(launch, scores, labels, M, L, delta, pos_thr, exact,
                                          need_grad, rank, sort, npos, grad, ws, lay, pl, algorithm, cost);
    case kFloat16:
      return launch_typed<__half, float>(launch, scores, labels, M, L, delta, pos_thr, exact,
                                         need_grad, rank, sort, npos, grad, ws, lay, pl, algorithm, cost);
    case kBFloat16:
      return launch_typed<__nv_bfloat16, float>(launch, scores, labels, M, L, delta, pos_thr,
                                                exact, need_grad, rank, sort, npos, grad, ws, lay,
                                                pl, algorithm, cost);
    default:
      return "unknown dtype code " + std::to_string(dtype);
  }
}

}  // namespace cuda_detail
}  // namespace rspose
