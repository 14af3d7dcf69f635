#pragma once
#include <cstdint>

namespace rspose {

// One row by the bucketed algorithm (docs/MATH.md, "The bucketed algorithm"), the twin of the
// pairwise pass A / pass B in rank_sort_cpu.cpp, on the same compacted row:
//   idx[0..n)       element indices of the positives (index order), idx[n..n+nn) of the
//                   negatives that survive pruning;
//   cs              their scores in that order; y_row the row's labels (read at idx[0..n)).
// The row's scores must be finite (rank_sort_cpu sends the others to the pairwise path).
// Writes *rank, *sort and, when need_grad, grad_row[idx[..]] (the rest of grad_row is left
// as it is: zero). Sequential within the row, so bitwise the same on any thread.
template <typename T>
void bucketed_row(const int32_t* idx, const T* cs, const T* y_row, int32_t n, int32_t nn,
                  double delta, bool exact, bool need_grad, T* rank, T* sort, T* grad_row);

extern template void bucketed_row<float>(const int32_t*, const float*, const float*, int32_t,
                                         int32_t, double, bool, bool, float*, float*, float*);
extern template void bucketed_row<double>(const int32_t*, const double*, const double*,
                                          int32_t, int32_t, double, bool, bool, double*,
                                          double*, double*);

}  // namespace rspose
