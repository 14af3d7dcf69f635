#pragma once
// Host interface of the CUDA kernels (rank_sort_cuda.cu). Plain C++: no CUDA headers, so
// bindings.cpp compiles with the host compiler alone.
#include <cstddef>
#include <cstdint>
#include <string>

namespace rspose {

// Bytes of device workspace rank_sort_cuda needs for M rows of length L (dtype: a DType
// code). Each segment is 256-byte aligned:
//   smin      [M]            acc    minimum positive score per row
//   pos_idx   [M, L]         int32  compacted positive indices per row
//   partials  [M, L/BP, 2]   acc    per-CTA Σ ℓR and Σ eS of pass A
//   coef      [M, K, L]      acc    pass-B coefficients per positive (need_grad; K = 2 or 5)
//   self      [M, L]         acc    self term, at the positive's element position (need_grad)
// acc is float64 for float64 scores and float32 otherwise. O(M·L) in all cases.
std::size_t cuda_workspace_bytes(int64_t M, int64_t L, int dtype, bool exact, bool need_grad);

// Devices the compiled runtime can use; 0 when there are none or the driver is too old.
int cuda_device_count();

// Enqueues the whole computation on `stream` (a cudaStream_t) of device `device` and returns
// at once: no host synchronisation, no allocation. Returns "" on success, else the error.
// scores [M, L] of `dtype`; labels [M, L] acc; rank, sort [M] acc; npos [M] int32;
// grad [M, L] acc (unused unless need_grad): scaled and cast to `dtype` by the caller, so
// half-precision gradients are rounded once, after the upstream scale. All contiguous, all
// on `device`.
std::string rank_sort_cuda(const void* scores, const void* labels, int64_t M, int64_t L,
                           int dtype, double delta, double pos_thr, bool exact, bool need_grad,
                           void* rank, void* sort, int32_t* npos, void* grad, void* workspace,
                           std::size_t workspace_bytes, void* stream, int device);

}  // namespace rspose
