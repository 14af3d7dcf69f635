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

#include "rank_sort_bucketed_kernels.cuh"
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

// A workspace segment: converts to the pointer type of whatever it initialises.
struct Segment {
  char* at;
  template <typename P>
  operator P*() const {
    return reinterpret_cast<P*>(at);
  }
};

// The pairwise passes' arrays (rank_sort_cuda.h, cuda_workspace_bytes).
template <typename A>
struct PairWs {
  int32_t* nkeep;
  A* key;
  A* plab;
  int32_t* idx;
  int64_t* a_off;
  int64_t* b_off;
  A* partials;
  A* coef;
  A* gpart;
};

template <typename A>
PairWs<A> pair_ws(char* ws, const Layout& l) {
  const auto at = [ws](size_t off) { return Segment{ws + off}; };
  return PairWs<A>{at(l.nkeep), at(l.key),      at(l.plab), at(l.idx),  at(l.a_off),
                   at(l.b_off), at(l.partials), at(l.coef), at(l.gpart)};
}

// The bucketed rows' arrays, in BucketWs's field order (all null without them).
template <typename A>
BucketWs<A> bucket_ws(char* ws, const Layout& l) {
  if (!l.buckets) return BucketWs<A>{};
  const auto at = [ws](size_t off) { return Segment{ws + off}; };
  return BucketWs<A>{at(l.bsel), at(l.boff), at(l.bfix),  at(l.sorder), at(l.ql),   at(l.qh),
                     at(l.bkey), at(l.lob),  at(l.hcnt),  at(l.hsum),   at(l.qneg), at(l.fb),
                     at(l.fbd),  at(l.pre),  at(l.alpha), at(l.beta),   l.np,       l.nb};
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

// Runs a sequence of launches, stopping at the first error (which it keeps).
template <typename Launch>
struct Sequence {
  const Launch& launch;
  std::string err;
  template <typename... P, typename... Args>
  void operator()(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, Args... args) {
    if (err.empty()) err = launch(name, kernel, grid, block, args...);
  }
};

template <typename S, typename A, int MODE, typename Launch>
std::string launch_passes(const Launch& launch, const RankSortParams& prm, const Layout& lay,
                          const Plan& pl) {
  using MT = ModeTraits<MODE>;
  const int64_t M = prm.M, L = prm.L;
  const bool need_grad = prm.need_grad;
  const S* s = static_cast<const S*>(prm.scores);
  const A* y = static_cast<const A*>(prm.labels);
  A* rank = static_cast<A*>(prm.rank);
  A* sort = static_cast<A*>(prm.sort);
  A* grad = static_cast<A*>(prm.grad);
  int32_t* npos = prm.npos;
  const A delta = static_cast<A>(prm.delta), tau = static_cast<A>(prm.pos_thr);
  char* ws = static_cast<char*>(prm.workspace);
  const PairWs<A> w = pair_ws<A>(ws, lay);
  const BucketWs<A> bw = bucket_ws<A>(ws, lay);
  const Step<A> p{delta, MT::hard ? A(0) : A(1) / (A(2) * delta)};
  const unsigned gx = static_cast<unsigned>(M < INT_MAX ? M : INT_MAX);
  const dim3 block(kThreads);
  // The bucketed kernels' δ and 1/(2δ) in double, as the CPU's (rank_sort_bucketed_cpu.h).
  const double dd = static_cast<double>(delta), inv2d = MT::hard ? 0.0 : 0.5 / dd;
  const A* key = w.key;
  Sequence<Launch> run{launch, std::string()};

  run("compact_kernel", compact_kernel<S, A>, dim3(gx), block, s, y, M, L, tau, delta, need_grad,
      npos, w.nkeep, w.key, w.plab, w.idx, grad, prm.algorithm, prm.cost, lay.np, bw.bsel);
  if (lay.buckets) {
    run("bucket_sort_kernel", bucket_sort_kernel<A>, rows_grid(M, pl), block, M, L, dd, MT::hard,
        npos, key, bw);
    run("bucket_search_kernel", bucket_search_kernel<A>, chunks_grid(M, L, pl), block, M, L,
        MT::hard, npos, key, bw);
    run("bucket_scan_kernel", bucket_scan_kernel<A, MT::exact>, rows_grid(M, pl), block, M, L,
        inv2d, MT::hard, npos, key, bw);
  }
  run("plan_kernel", plan_kernel, dim3(1), block, M, MT::bp, pl.split, pl.chunk, npos, w.nkeep,
      w.a_off, w.b_off);
  if (L > 0) {
    run("pass_a_kernel", pass_a_kernel<A, MODE>, dim3(static_cast<unsigned>(pl.ctas_a)), block, M,
        L, p, need_grad, npos, w.nkeep, w.key, w.plab, w.a_off, w.partials, w.coef,
        static_cast<const int32_t*>(bw.bsel), static_cast<const A*>(bw.fb),
        static_cast<const A*>(bw.fbd), lay.np);
  }
  const int64_t rb = cdiv(M, kThreads);
  const dim3 grid_rows(static_cast<unsigned>(rb < INT_MAX ? rb : INT_MAX));
  run("rows_kernel", rows_kernel<A>, grid_rows, block, M, L, MT::bp, npos, w.partials, rank, sort);

  if (need_grad && L > 0) {
    run("pass_b_kernel", pass_b_kernel<A, MODE>, dim3(static_cast<unsigned>(pl.ctas_b)), block, M,
        L, p, pl.split, npos, w.nkeep, w.key, w.plab, w.idx, w.b_off, w.coef, grad, w.gpart);
    if (pl.split > 1) {
      const int64_t fb = std::min<int64_t>(cdiv(M * L, kThreads), pl.ctas_b * 4);
      run("finish_kernel", finish_kernel<A, MODE>, dim3(static_cast<unsigned>(fb)), block, M, L,
          pl.split, npos, w.nkeep, w.idx, w.coef, w.gpart, grad);
    }
    if (lay.buckets) {  // the bucketed rows' negatives
      run("bucket_coef_kernel", bucket_coef_kernel<A, MT::exact>, rows_grid(M, pl), block, M, L,
          inv2d, MT::hard, npos, key, static_cast<const A*>(w.coef), bw);
      run("bucket_grad_kernel", bucket_grad_kernel<A>, chunks_grid(M, L, pl), block, M, L, npos,
          key, static_cast<const int32_t*>(w.idx), bw, grad);
    }
  }
  return run.err;
}

// Every launch for M > 0 rows of the call `p` (argument meaning as in rank_sort_cuda.h); its
// workspace is carved by `lay` (make_layout with acc_bytes(p.dtype), p.exact, p.need_grad).
template <typename Launch>
std::string launch_all(const Launch& launch, const RankSortParams& p, const Layout& lay,
                       const Plan& pl) {
  std::string err = "unknown dtype code " + std::to_string(p.dtype);
  dispatch_dtype_mode<__half, __nv_bfloat16>(p, [&](auto s, auto a, auto mode) {
    using S = typename decltype(s)::type;
    using A = typename decltype(a)::type;
    err = launch_passes<S, A, decltype(mode)::value>(launch, p, lay, pl);
  });
  return err;
}

}  // namespace cuda_detail
}  // namespace rspose
