#pragma once
// Host interface of the CUDA kernels (rank_sort_cuda.cu). Plain C++: no CUDA headers, so
// bindings.cpp compiles with the host compiler alone.
#include <cstddef>
#include <cstdint>
#include <string>

#include "../rank_sort_params.h"  // RankSortParams, CudaTuning (plain C++ here)

namespace rspose {

// The launch shape of a call (for reports; rank_sort_cuda plans the same one itself).
struct CudaPlan {
  int64_t ctas_a, ctas_b;
  int split;
};
CudaPlan cuda_plan(int64_t M, int64_t L, int dtype, bool exact, const CudaTuning& tuning);

// Bytes of device workspace rank_sort_cuda needs for M rows of length L (dtype: a DType
// code). Each segment is 256-byte aligned:
//   nkeep     [M]            int32  negatives that survive pruning, per row
//   key       [M, L]         acc    compacted scores: positives, then the kept negatives
//   plab      [M, L]         acc    the positives' labels
//   idx       [M, L]         int32  each compacted slot's element index
//   a_off     [M + 1]        int64  prefix sums of pass-A items per row
//   b_off     [M + 1]        int64  prefix sums of pass-B warp items per row
//   partials  [M, L/BP, 2]   acc    per-item Σ ℓR and Σ eS of pass A
//   coef      [M, K+1, L]    acc    pass-B coefficients and self term per positive (need_grad)
//   gpart     [S, M, L]      acc    pass-B partial sums when rows are split (S > 1)
// and, unless algorithm is kPairwise, the bucketed rows' arrays (BucketWs in
// rank_sort_bucketed_kernels.cuh): O(M·(np + nb) + M·L), np ≤ max(64, L/8) positives per
// row and nb = 2·np + 2 histogram entries.
// acc is float64 for float64 scores and float32 otherwise. O(M·L) in all cases (S > 1 only
// when M·L is small).
// Reads p.M, p.L, p.dtype, p.exact, p.need_grad, p.algorithm and p.tuning.
std::size_t cuda_workspace_bytes(const RankSortParams& p);

// The most positives a bucketed row of length L may have (np_cap of rank_sort_kernels.cuh:
// the shared-memory sort's capacity and the workspace bound); rows with more stay pairwise.
int64_t cuda_max_positives(int64_t L, int dtype);

// Devices the compiled runtime can use; 0 when there are none or the driver is too old.
int cuda_device_count();

// Enqueues the whole computation described by `p` (csrc/rank_sort_params.h; checked by
// bindings.cpp) on p.stream (a cudaStream_t) of device p.device and returns at once: no
// host synchronisation, no allocation. Returns "" on success, else the error. scores [M, L]
// of p.dtype; labels [M, L] acc; rank, sort [M] acc; npos [M] int32; grad [M, L] acc (unused
// unless need_grad): scaled and cast to the score dtype by the caller, so half-precision
// gradients are rounded once, after the upstream scale. All contiguous, all on the device;
// p.workspace holds at least cuda_workspace_bytes(p) bytes. p.algorithm: every row
// pairwise, every row that can be bucketed, or per row by p.cost, chosen on the device
// (compact_kernel).
std::string rank_sort_cuda(const RankSortParams& p);

}  // namespace rspose
