#pragma once
#include <cstdint>

#include "../rank_sort_params.h"

namespace rspose {

// The Rank & Sort core on the CPU (contract: rspose_kernels/backends/__init__.py), for the
// call described by `p` (csrc/rank_sort_params.h; checked by bindings.cpp): float32 or
// float64 scores, labels and outputs in that dtype; p.num_threads threads, results bitwise
// independent of it. p.algorithm: every row pairwise, every row with finite scores
// bucketed, or per row by p.cost (takes_bucketed, csrc/rank_sort_bucketed_math.h).
void rank_sort_cpu(const RankSortParams& p);

// out[r] = whether rank_sort_cpu(p) computes row r bucketed (its own compaction and
// choice; reads only the inputs, the sizes, δ, τ, the algorithm and the cost of `p`).
void bucketed_rows_cpu(const RankSortParams& p, uint8_t* out);

}  // namespace rspose
