#pragma once
#include <cstdint>

namespace rspose {

// The Rank & Sort core on the CPU (contract: rspose_kernels/backends/__init__.py).
// scores, labels: [M, L] contiguous, both float32 (is_double false) or both float64.
// rank, sort: [M] in that dtype; npos: [M] int32; grad: [M, L] in that dtype, written only
// when need_grad (may be null otherwise). Results are bitwise independent of num_threads.
// algorithm: rspose::Algorithm (csrc/rank_sort_bucketed_math.h): every row pairwise, every
// row with finite scores bucketed, or per row by the cost model with these constants.
void rank_sort_cpu(const void* scores, const void* labels, int64_t M, int64_t L,
                   bool is_double, double delta, double pos_thr, bool exact, bool need_grad,
                   void* rank, void* sort, int32_t* npos, void* grad, int num_threads,
                   int algorithm = 0, double cost_per_negative = 0.0,
                   double cost_per_positive = 0.0, double cost_positive_pairs = 1.0);

}  // namespace rspose
