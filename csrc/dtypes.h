#pragma once

namespace rspose {

// Score dtype codes shared with rspose_kernels/backends/native.py (also exported as
// _C.FLOAT32 ...). Labels and per-row outputs are float64 for kFloat64 and float32 otherwise.
enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace rspose
