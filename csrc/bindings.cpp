// rspose_kernels._C: the pybind11 face of the C++ and CUDA kernels.
//
// Deliberately torch-free (docs/DESIGN.md §6): Python passes data pointers
// (tensor.data_ptr()), sizes, a dtype code and, for CUDA, the current stream handle and a
// workspace it allocated with torch's caching allocator. So one binary serves any torch
// version, and the build needs no torch. A call is one RankSortParams
// (csrc/rank_sort_params.h) that rspose_kernels/backends/native.py fills; the Python side
// checks shapes, dtypes, contiguity and devices, and validate_params below checks the struct
// itself, once, before any kernel sees it (the layers below trust it).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/rank_sort_cpu.h"
#include "dtypes.h"
#include "rank_sort_bucketed_math.h"
#include "rank_sort_math.h"
#include "rank_sort_params.h"
#ifdef RSPOSE_WITH_CUDA
#include "cuda/rank_sort_cuda.h"
#endif

// What CMakeLists.txt built (build_info), in a header it generates.
#ifdef RSPOSE_HAVE_BUILD_INFO
#include "rspose_build_info.h"
#endif
#ifndef RSPOSE_NVCC
#define RSPOSE_NVCC ""
#endif
#ifndef RSPOSE_NVCC_VERSION
#define RSPOSE_NVCC_VERSION ""
#endif
#ifndef RSPOSE_CUDA_ARCHS
#define RSPOSE_CUDA_ARCHS ""
#endif

namespace py = pybind11;
using rspose::RankSortParams;

namespace {

constexpr bool kHasCuda =
#ifdef RSPOSE_WITH_CUDA
    true;
#else
    false;
#endif

void require(bool ok, const char* entry, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(entry) + ": " + what);
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The one check of a call's arguments (entry: "rank_sort_cpu" or "rank_sort_cuda"; outputs:
// whether the call writes them). Every error names the field it is about.
void validate_params(const RankSortParams& p, const char* entry, bool cuda, bool outputs = true) {
  if (cuda)
    require(p.dtype >= rspose::kFloat32 && p.dtype <= rspose::kBFloat16, entry,
            "params.dtype: unknown dtype code " + std::to_string(p.dtype));
  else
    require(p.dtype == rspose::kFloat32 || p.dtype == rspose::kFloat64, entry,
            "params.dtype: scores must be float32 or float64 (dtype code " +
                std::to_string(p.dtype) + ")");
  require(p.M >= 0, entry, "params.M: bad size " + std::to_string(p.M));
  require(p.L >= 0 && p.L <= INT32_MAX, entry, "params.L: bad size " + std::to_string(p.L));
  require(p.algorithm >= rspose::kPairwise && p.algorithm <= rspose::kAuto, entry,
          "params.algorithm: unknown algorithm code " + std::to_string(p.algorithm));
  require(p.delta >= 0, entry, "params.delta: must be >= 0, got " + num(p.delta));
  require(!p.exact || p.delta > 0, entry, "params.exact: the exact gradient needs delta > 0");
  const rspose::CostModel& c = p.cost;
  require(std::isfinite(c.per_negative) && std::isfinite(c.per_positive) &&
              std::isfinite(c.positive_pairs) && std::isfinite(c.bucketed_positive_pairs),
          entry, "params.cost: the cost constants must be finite");
  const bool rows = p.M > 0, elements = rows && p.L > 0;
  const auto nonnull = [&](const void* ptr, bool needed, const char* field) {
    require(!needed || ptr != nullptr, entry, std::string("params.") + field + ": null pointer");
  };
  nonnull(p.scores, elements, "scores");
  nonnull(p.labels, elements, "labels");
  if (!outputs) return;
  nonnull(p.rank, rows, "rank");
  nonnull(p.sort, rows, "sort");
  nonnull(p.npos, rows, "npos");
  nonnull(p.grad, p.need_grad && elements, "grad");
  if (!cuda) {
    require(p.num_threads >= 1, entry,
            "params.num_threads: must be >= 1, got " + std::to_string(p.num_threads));
    return;
  }
#ifdef RSPOSE_WITH_CUDA
  require(p.device >= 0, entry, "params.device: bad device " + std::to_string(p.device));
  const std::size_t need = rspose::cuda_workspace_bytes(p);
  require(p.workspace_bytes >= need, entry,
          "params.workspace_bytes: workspace of " + std::to_string(p.workspace_bytes) +
              " bytes, need " + std::to_string(need));
  nonnull(p.workspace, need > 0, "workspace");
#endif
}

void cpu_entry(const RankSortParams& p) {
  validate_params(p, "rank_sort_cpu", false);
  py::gil_scoped_release nogil;  // the kernel may run for seconds on its own threads
  rspose::rank_sort_cpu(p);
}

#ifdef RSPOSE_WITH_CUDA
void cuda_entry(const RankSortParams& p) {
  validate_params(p, "rank_sort_cuda", true);
  std::string err;
  {
    py::gil_scoped_release nogil;
    err = rspose::rank_sort_cuda(p);
  }
  if (!err.empty()) throw std::runtime_error("rank_sort_cuda: " + err);
}
#endif

// A pointer field, read and written from Python as an integer address (tensor.data_ptr()).
template <typename P>
void pointer_field(py::class_<RankSortParams>& cls, const char* name, P* RankSortParams::* f) {
  cls.def_property(
      name, [f](const RankSortParams& p) { return reinterpret_cast<std::uintptr_t>(p.*f); },
      [f](RankSortParams& p, std::uintptr_t v) { p.*f = reinterpret_cast<P*>(v); });
}

void bind_structs(py::module_& m) {
  py::class_<rspose::CudaTuning>(m, "CudaTuning",
                                 "Launch parameters of the CUDA kernels (rank_sort_params.h).")
      .def(py::init<>())
      .def_readwrite("sms", &rspose::CudaTuning::sms)
      .def_readwrite("ctas_per_sm", &rspose::CudaTuning::ctas_per_sm)
      .def_readwrite("warp_items_per_sm", &rspose::CudaTuning::warp_items_per_sm)
      .def_readwrite("max_split", &rspose::CudaTuning::max_split);

  py::class_<rspose::CostModel>(m, "CostModel",
                                "The per-row cost model's constants (rank_sort_bucketed_math.h).")
      .def(py::init([](double per_negative, double per_positive, double positive_pairs,
                       double bucketed_positive_pairs) {
             return rspose::CostModel{per_negative, per_positive, positive_pairs,
                                      bucketed_positive_pairs};
           }),
           py::arg("per_negative"), py::arg("per_positive"), py::arg("positive_pairs"),
           py::arg("bucketed_positive_pairs") = 0.0)
      .def_readwrite("per_negative", &rspose::CostModel::per_negative)
      .def_readwrite("per_positive", &rspose::CostModel::per_positive)
      .def_readwrite("positive_pairs", &rspose::CostModel::positive_pairs)
      .def_readwrite("bucketed_positive_pairs", &rspose::CostModel::bucketed_positive_pairs);

  py::class_<RankSortParams> params(
      m, "RankSortParams",
      "One call of rank_sort_cpu / rank_sort_cuda (csrc/rank_sort_params.h): pointers as "
      "integer addresses, sizes, dtype code, delta, pos_thr, exact, need_grad, algorithm, "
      "cost, and num_threads (CPU) or workspace, workspace_bytes, stream, device, tuning "
      "(CUDA).");
  params.def(py::init<>());
  pointer_field(params, "scores", &RankSortParams::scores);
  pointer_field(params, "labels", &RankSortParams::labels);
  pointer_field(params, "rank", &RankSortParams::rank);
  pointer_field(params, "sort", &RankSortParams::sort);
  pointer_field(params, "npos", &RankSortParams::npos);
  pointer_field(params, "grad", &RankSortParams::grad);
  pointer_field(params, "workspace", &RankSortParams::workspace);
  pointer_field(params, "stream", &RankSortParams::stream);
  params.def_readwrite("M", &RankSortParams::M)
      .def_readwrite("L", &RankSortParams::L)
      .def_readwrite("dtype", &RankSortParams::dtype)
      .def_readwrite("delta", &RankSortParams::delta)
      .def_readwrite("pos_thr", &RankSortParams::pos_thr)
      .def_readwrite("exact", &RankSortParams::exact)
      .def_readwrite("need_grad", &RankSortParams::need_grad)
      .def_readwrite("algorithm", &RankSortParams::algorithm)
      .def_readwrite("cost", &RankSortParams::cost)
      .def_readwrite("num_threads", &RankSortParams::num_threads)
      .def_readwrite("workspace_bytes", &RankSortParams::workspace_bytes)
      .def_readwrite("device", &RankSortParams::device)
      .def_readwrite("tuning", &RankSortParams::tuning);
}

void bind_constants(py::module_& m) {
  m.attr("FLOAT32") = static_cast<int>(rspose::kFloat32);
  m.attr("FLOAT64") = static_cast<int>(rspose::kFloat64);
  m.attr("FLOAT16") = static_cast<int>(rspose::kFloat16);
  m.attr("BFLOAT16") = static_cast<int>(rspose::kBFloat16);
  m.attr("PAIRWISE") = static_cast<int>(rspose::kPairwise);
  m.attr("BUCKETED") = static_cast<int>(rspose::kBucketed);
  m.attr("AUTO") = static_cast<int>(rspose::kAuto);
  m.attr("EPS") = rspose::kEps;
  m.attr("RESOLVE") = rspose::kResolve;
  m.attr("SPAN_LIMIT") = rspose::kSpanLimit;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "rspose-kernels native kernels (C++ CPU, hand-written CUDA); torch-free ABI";
  bind_constants(m);
  bind_structs(m);

  m.def("has_cuda", []() { return kHasCuda; }, "Whether the CUDA kernels were compiled in.");

  m.def(
      "build_info",
      []() {
        py::dict d;
        d["cuda"] = kHasCuda;
        d["nvcc"] = std::string(RSPOSE_NVCC);
        d["nvcc_version"] = std::string(RSPOSE_NVCC_VERSION);
        d["cuda_archs"] = std::string(RSPOSE_CUDA_ARCHS);
        return d;
      },
      "What CMake built: {'cuda': bool, 'nvcc': the CUDA compiler's path or '', "
      "'nvcc_version': its version or '', 'cuda_archs': e.g. '80;90' or ''}.");

  m.def(
      "cuda_device_count",
      []() {
#ifdef RSPOSE_WITH_CUDA
        return rspose::cuda_device_count();
#else
        return 0;
#endif
      },
      "Devices usable by the compiled CUDA runtime (0 when the driver is too old for it).");

  m.def("rank_sort_cpu", &cpu_entry, py::arg("params"),
        "Rank & Sort rows on the CPU, as described by a RankSortParams: contiguous [M, L] "
        "scores and labels (both float32 or both float64), outputs rank/sort [M] (same "
        "dtype), npos [M] int32, grad [M, L] (same dtype; 0 when need_grad is false). "
        "algorithm: PAIRWISE, BUCKETED or AUTO (per row, by the cost model).");

  m.def(
      "bucketed_rows_cpu",
      [](const RankSortParams& p) {
        validate_params(p, "bucketed_rows_cpu", false, false);
        std::vector<uint8_t> out(static_cast<size_t>(p.M));
        rspose::bucketed_rows_cpu(p, out.data());
        return std::vector<bool>(out.begin(), out.end());
      },
      py::arg("params"),
      "Per row, whether rank_sort_cpu(params) computes it bucketed (the kernel's own "
      "compaction and takes_bucketed); reads only the inputs of params.");

  m.def(
      "prefers_bucketed",
      [](int64_t n, int64_t nn, double per_negative, double per_positive, double positive_pairs,
         double bucketed_positive_pairs) {
        return rspose::prefers_bucketed(
            n, nn,
            rspose::CostModel{per_negative, per_positive, positive_pairs, bucketed_positive_pairs});
      },
      py::arg("n"), py::arg("nn"), py::arg("cost_per_negative"), py::arg("cost_per_positive"),
      py::arg("cost_positive_pairs"), py::arg("cost_bucketed_positive_pairs") = 0.0,
      "The per-row cost model of csrc/rank_sort_bucketed_math.h: whether a row with n "
      "positives and nn unpruned negatives goes to the bucketed algorithm under `auto`.");

  m.def("takes_bucketed", &rspose::takes_bucketed, py::arg("n"), py::arg("nkeep"), py::arg("span"),
        py::arg("nonfinite"), py::arg("delta"), py::arg("algorithm"), py::arg("max_pos"),
        py::arg("cost"),
        "The per-row choice of the CPU and CUDA kernels (csrc/rank_sort_bucketed_math.h): "
        "whether a row with n positives, nkeep kept negatives, live scores up to span in "
        "magnitude (nonfinite: one of them is NaN or inf) goes bucketed under algorithm.");

#ifdef RSPOSE_WITH_CUDA
  m.def("cuda_workspace_bytes", &rspose::cuda_workspace_bytes, py::arg("params"),
        "Bytes of device workspace rank_sort_cuda(params) needs (O(M*L); 256-byte "
        "aligned); the bucketed rows' part only when params.algorithm is not PAIRWISE.");
  m.def(
      "cuda_workspace_bytes",
      [](int64_t M, int64_t L, int dtype, bool exact, bool need_grad,
         const rspose::CudaTuning& tuning, int algorithm) {
        RankSortParams p;
        p.M = M;
        p.L = L;
        p.dtype = dtype;
        p.exact = exact;
        p.need_grad = need_grad;
        p.tuning = tuning;
        p.algorithm = algorithm;
        return rspose::cuda_workspace_bytes(p);
      },
      py::arg("M"), py::arg("L"), py::arg("dtype"), py::arg("exact"), py::arg("need_grad"),
      py::arg("tuning"), py::arg("algorithm") = 0,
      "The same, from the sizes, dtype code, mode, tuning and algorithm code.");

  m.def("cuda_max_positives", &rspose::cuda_max_positives, py::arg("L"), py::arg("dtype"),
        "The most positives a row of length L may have for the CUDA bucketed path (the "
        "shared-memory sort); rows with more stay pairwise.");

  m.def(
      "cuda_plan",
      [](int64_t M, int64_t L, int dtype, bool exact, const rspose::CudaTuning& tuning) {
        const rspose::CudaPlan p = rspose::cuda_plan(M, L, dtype, exact, tuning);
        return py::make_tuple(p.ctas_a, p.ctas_b, p.split);
      },
      py::arg("M"), py::arg("L"), py::arg("dtype"), py::arg("exact"), py::arg("tuning"),
      "(pass-A CTAs, pass-B CTAs, pass-B row split) of a call: the launch shape, for reports.");

  m.def("rank_sort_cuda", &cuda_entry, py::arg("params"),
        "Rank & Sort rows on a CUDA device, asynchronously on params.stream, as described by "
        "a RankSortParams. scores in any of the four dtypes; labels, rank, sort float64 for "
        "float64 scores and float32 otherwise; grad in the accumulation dtype. algorithm: "
        "PAIRWISE, BUCKETED or AUTO (per row, on the device, by the cost model).");
#else
  m.def("rank_sort_cuda", [](py::args, py::kwargs) {
    throw std::runtime_error(
        "rank_sort_cuda: rspose_kernels._C was built without CUDA "
        "(no nvcc found, or RSPOSE_CUDA=0)");
  });
#endif
}
