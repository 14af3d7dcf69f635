// rspose_kernels._C: the pybind11 face of the C++ and CUDA kernels.
//
// Deliberately torch-free (SPEC §6): Python passes data pointers (tensor.data_ptr()), sizes,
// a dtype code and, for CUDA, the current stream handle and a workspace it allocated with
// torch's caching allocator. So one binary serves any torch version, and the build needs no
// torch. The Python side (rspose_kernels/backends/native.py) owns all checks of shapes,
// dtypes, contiguity and devices; these functions trust their arguments.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu/rank_sort_cpu.h"
#include "dtypes.h"
#include "rank_sort_bucketed_math.h"
#ifdef RSPOSE_WITH_CUDA
#include "cuda/rank_sort_cuda.h"
#endif

namespace py = pybind11;

namespace {

template <typename P>
P* ptr(std::uintptr_t p) { return reinterpret_cast<P*>(p); }

void cpu_entry(std::uintptr_t scores, std::uintptr_t labels, int64_t M, int64_t L, int dtype,
               double delta, double pos_thr, bool exact, bool need_grad, std::uintptr_t rank,
               std::uintptr_t sort, std::uintptr_t npos, std::uintptr_t grad, int num_threads,
               int algorithm, double cost_per_negative, double cost_per_positive,
               double cost_positive_pairs) {
  if (dtype != rspose::kFloat32 && dtype != rspose::kFloat64)
    throw std::invalid_argument("rank_sort_cpu: scores must be float32 or float64 (dtype code " +
                                std::to_string(dtype) + ")");
  if (M < 0 || L < 0 || L > INT32_MAX)
    throw std::invalid_argument("rank_sort_cpu: bad sizes M=" + std::to_string(M) +
                                ", L=" + std::to_string(L));
  if (algorithm < rspose::kPairwise || algorithm > rspose::kAuto)
    throw std::invalid_argument("rank_sort_cpu: unknown algorithm code " +
                                std::to_string(algorithm));
  py::gil_scoped_release nogil;  // the kernel may run for seconds on its own threads
  rspose::rank_sort_cpu(ptr<const void>(scores), ptr<const void>(labels), M, L,
                        dtype == rspose::kFloat64, delta, pos_thr, exact, need_grad,
                        ptr<void>(rank), ptr<void>(sort), ptr<int32_t>(npos), ptr<void>(grad),
                        num_threads, algorithm, cost_per_negative, cost_per_positive,
                        cost_positive_pairs);
}

#ifdef RSPOSE_WITH_CUDA
void cuda_entry(std::uintptr_t scores, std::uintptr_t labels, int64_t M, int64_t L, int dtype,
                double delta, double pos_thr, bool exact, bool need_grad, std::uintptr_t rank,
                std::uintptr_t sort, std::uintptr_t npos, std::uintptr_t grad,
                std::uintptr_t workspace, std::size_t workspace_bytes, std::uintptr_t stream,
                int device, const rspose::CudaTuning& tuning, int algorithm,
                double cost_per_negative, double cost_per_positive, double cost_positive_pairs,
                double cost_bucketed_positive_pairs) {
  if (dtype < rspose::kFloat32 || dtype > rspose::kBFloat16)
    throw std::invalid_argument("rank_sort_cuda: unknown dtype code " + std::to_string(dtype));
  if (M < 0 || L < 0 || L > INT32_MAX)
    throw std::invalid_argument("rank_sort_cuda: bad sizes M=" + std::to_string(M) +
                                ", L=" + std::to_string(L));
  if (algorithm < rspose::kPairwise || algorithm > rspose::kAuto)
    throw std::invalid_argument("rank_sort_cuda: unknown algorithm code " +
                                std::to_string(algorithm));
  const std::size_t need =
      rspose::cuda_workspace_bytes(M, L, dtype, exact, need_grad, algorithm, tuning);
  if (workspace_bytes < need)
    throw std::invalid_argument("rank_sort_cuda: workspace of " +
                                std::to_string(workspace_bytes) + " bytes, need " +
                                std::to_string(need));
  std::string err;
  {
    py::gil_scoped_release nogil;
    err = rspose::rank_sort_cuda(ptr<const void>(scores), ptr<const void>(labels), M, L, dtype,
                                 delta, pos_thr, exact, need_grad, ptr<void>(rank),
                                 ptr<void>(sort), ptr<int32_t>(npos), ptr<void>(grad),
                                 ptr<void>(workspace), workspace_bytes,
                                 ptr<void>(stream), device, tuning, algorithm,
                                 rspose::CostModel{cost_per_negative, cost_per_positive,
                                                   cost_positive_pairs,
                                                   cost_bucketed_positive_pairs});
  }
  if (!err.empty()) throw std::runtime_error("rank_sort_cuda: " + err);
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "rspose-kernels native kernels (C++ CPU, hand-written CUDA); torch-free ABI";
  m.attr("FLOAT32") = static_cast<int>(rspose::kFloat32);
  m.attr("FLOAT64") = static_cast<int>(rspose::kFloat64);
  m.attr("FLOAT16") = static_cast<int>(rspose::kFloat16);
  m.attr("BFLOAT16") = static_cast<int>(rspose::kBFloat16);

  m.def("has_cuda", []() {
#ifdef RSPOSE_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "Whether the CUDA kernels were compiled in.");

  m.def("cuda_device_count", []() {
#ifdef RSPOSE_WITH_CUDA
    return rspose::cuda_device_count();
#else
    return 0;
#endif
  }, "Devices usable by the compiled CUDA runtime (0 when the driver is too old for it).");

  m.def("rank_sort_cpu", &cpu_entry, py::arg("scores"), py::arg("labels"), py::arg("M"),
        py::arg("L"), py::arg("dtype"), py::arg("delta"), py::arg("pos_thr"), py::arg("exact"),
        py::arg("need_grad"), py::arg("rank"), py::arg("sort"), py::arg("npos"),
        py::arg("grad"), py::arg("num_threads"), py::arg("algorithm") = 0,
        py::arg("cost_per_negative") = 0.0, py::arg("cost_per_positive") = 0.0,
        py::arg("cost_positive_pairs") = 1.0,
        "Rank & Sort rows on the CPU. Pointers to contiguous [M, L] scores and labels (both "
        "float32 or both float64), outputs rank/sort [M] (same dtype), npos [M] int32, grad "
        "[M, L] (same dtype; 0 when need_grad is false). algorithm: PAIRWISE, BUCKETED or "
        "AUTO (per row, by the cost model with its three constants).");

  m.attr("PAIRWISE") = static_cast<int>(rspose::kPairwise);
  m.attr("BUCKETED") = static_cast<int>(rspose::kBucketed);
  m.attr("AUTO") = static_cast<int>(rspose::kAuto);
  m.def("prefers_bucketed", [](int64_t n, int64_t nn, double per_negative, double per_positive,
                               double positive_pairs, double bucketed_positive_pairs) {
    return rspose::prefers_bucketed(
        n, nn, rspose::CostModel{per_negative, per_positive, positive_pairs,
                                 bucketed_positive_pairs});
  }, py::arg("n"), py::arg("nn"), py::arg("cost_per_negative"), py::arg("cost_per_positive"),
  py::arg("cost_positive_pairs"), py::arg("cost_bucketed_positive_pairs") = 0.0,
  "The per-row cost model of csrc/rank_sort_bucketed_math.h: whether a row with n positives "
  "and nn unpruned negatives goes to the bucketed algorithm under `auto`.");

#ifdef RSPOSE_WITH_CUDA
  py::class_<rspose::CudaTuning>(m, "CudaTuning",
                                 "Launch parameters of the CUDA kernels (rank_sort_cuda.h).")
      .def(py::init<>())
      .def_readwrite("sms", &rspose::CudaTuning::sms)
      .def_readwrite("ctas_per_sm", &rspose::CudaTuning::ctas_per_sm)
      .def_readwrite("warp_items_per_sm", &rspose::CudaTuning::warp_items_per_sm)
      .def_readwrite("max_split", &rspose::CudaTuning::max_split);

  m.def("cuda_workspace_bytes", [](int64_t M, int64_t L, int dtype, bool exact, bool need_grad,
                                   const rspose::CudaTuning& tuning, int algorithm) {
    return rspose::cuda_workspace_bytes(M, L, dtype, exact, need_grad, algorithm, tuning);
  }, py::arg("M"), py::arg("L"), py::arg("dtype"), py::arg("exact"), py::arg("need_grad"),
  py::arg("tuning"), py::arg("algorithm") = 0,
  "Bytes of device workspace rank_sort_cuda needs (O(M*L); 256-byte aligned); the bucketed "
  "rows' part only when algorithm is not PAIRWISE.");

  m.def("cuda_max_positives", &rspose::cuda_max_positives, py::arg("L"), py::arg("dtype"),
        "The most positives a row of length L may have for the CUDA bucketed path (the "
        "shared-memory sort); rows with more stay pairwise.");

  m.def("cuda_plan", [](int64_t M, int64_t L, int dtype, bool exact,
                        const rspose::CudaTuning& tuning) {
    const rspose::CudaPlan p = rspose::cuda_plan(M, L, dtype, exact, tuning);
    return py::make_tuple(p.ctas_a, p.ctas_b, p.split);
  }, py::arg("M"), py::arg("L"), py::arg("dtype"), py::arg("exact"), py::arg("tuning"),
  "(pass-A CTAs, pass-B CTAs, pass-B row split) of a call: the launch shape, for reports.");

  m.def("rank_sort_cuda", &cuda_entry, py::arg("scores"), py::arg("labels"), py::arg("M"),
        py::arg("L"), py::arg("dtype"), py::arg("delta"), py::arg("pos_thr"), py::arg("exact"),
        py::arg("need_grad"), py::arg("rank"), py::arg("sort"), py::arg("npos"),
        py::arg("grad"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"),
        py::arg("device"), py::arg("tuning"), py::arg("algorithm"),
        py::arg("cost_per_negative"), py::arg("cost_per_positive"),
        py::arg("cost_positive_pairs"), py::arg("cost_bucketed_positive_pairs"),
        "Rank & Sort rows on a CUDA device, asynchronously on `stream`. scores in any of the "
        "four dtypes; labels, rank, sort float64 for float64 scores and float32 otherwise; "
        "grad in the accumulation dtype. algorithm: PAIRWISE, BUCKETED or AUTO (per row, on "
        "the device, by the cost model with these constants).");
#else
  m.def("rank_sort_cuda", [](py::args, py::kwargs) {
    throw std::runtime_error("rank_sort_cuda: rspose_kernels._C was built without CUDA "
                             "(no nvcc found, or RSPOSE_CUDA=0)");
  });
#endif
}
