// The arithmetic of the bucketed algorithm (docs/MATH.md, "The bucketed algorithm"; SPEC
// §5b), written once for the CPU kernel (csrc/cpu/rank_sort_bucketed_cpu.cpp) and the CUDA
// kernel of a later issue. Small inline functions over raw arrays: breakpoints and the bucket
// search, band (ramp) masses, a Fenwick tree, and the per-row cost model. Everything is
// accumulated in double: a band sum is a difference of two prefix sums over a whole row.
#pragma once

#include <cmath>
#include <cstdint>

#include "rank_sort_math.h"

namespace rspose {

// Mass of the ramp band (s_i − δ, s_i + δ) seen from positive i: Σ_band c_j·H(s_j − s_i) =
// (Σ c_j s_j − s_i Σ c_j)/(2δ) + Σ c_j / 2, from the band's weight `c` = Σ c_j and weighted
// score sum `cs` = Σ c_j s_j (scores relative to one row offset). An empty band gives an exact
// 0, so that "nothing above i" stays an exact 0 for the ε tests of the identity update.
RS_HD double ramp_mass(double c, double cs, double s_i, double inv2d) {
  return c == 0.0 ? 0.0 : (cs - s_i * c) * inv2d + 0.5 * c;
}

// Breakpoint keys of the sorted positive scores u (δ > 0): hi_k = u_k + δ and the lower
// bound lo_k = u_k − δ stored as the next double above it, so that ONE predicate `key ≤ s`
// answers both "hi_k ≤ s" (H = 1) and "lo_k < s" (s past the start of the ramp).
RS_HD double key_hi(double u, double delta) { return u + delta; }
RS_HD double key_lo(double u, double delta) {
  return ::nextafter(u - delta, static_cast<double>(INFINITY));
}

// Bucket of a score among `len` sorted keys: q = #{key ≤ s} (upper bound), branch-free.
// With the merged keys of δ > 0, a = lo_before[q] = #{k : lo_k < s} and b = q − a =
// #{k : hi_k ≤ s}: positives at sorted positions [0, b) see s saturated (H = 1), those in
// [b, a) see it on their ramp. δ = 0: the keys are u itself and a = b = q = #{u_k ≤ s}
// (H(0) = 1: a score equal to u_k counts, hence the upper bound).
RS_HD int32_t bucket_of(double s, const double* key, int32_t len) {
  if (len <= 0) return 0;
  const double* base = key;
  int32_t n = len;
  while (n > 1) {  // the answer stays in [base, base + n]
    const int32_t half = n / 2;
    base = base[half] <= s ? base + half : base;
    n -= half;
  }
  return static_cast<int32_t>(base - key) + (base[0] <= s ? 1 : 0);
}

// Fenwick tree of K doubles per node over positions 0..m-1 (tree: K·(m+1) doubles, zeroed).
template <int K>
RS_HD void fenwick_add(double* tree, int32_t m, int32_t pos, const double (&v)[K]) {
  for (int32_t i = pos + 1; i <= m; i += i & -i)
    for (int c = 0; c < K; ++c) tree[static_cast<int64_t>(i) * K + c] += v[c];
}

// Σ over positions [0, pos) into out.
template <int K>
RS_HD void fenwick_prefix(const double* tree, int32_t pos, double (&out)[K]) {
  for (int c = 0; c < K; ++c) out[c] = 0.0;
  for (int32_t i = pos; i > 0; i -= i & -i)
    for (int c = 0; c < K; ++c) out[c] += tree[static_cast<int64_t>(i) * K + c];
}

// Per-row cost model (docs/MATH.md, "Choosing per row"). Pairwise work is n·(n + ñ) pair
// evaluations; bucketed work is a binary search over 2n breakpoints per element (ñ negatives
// and n positives) plus Fenwick sweeps over the positives, both ~log2(2n) steps. The two
// constants are the price of one such step in pair evaluations, calibrated per backend by
// bench/run.py (rspose_kernels/backends/cost_model.py holds them).
struct CostModel {
  double per_negative;  // pair evaluations one negative's search + histogram costs, per log2 step
  double per_positive;  // the same for one positive (search, Fenwick sweeps, coefficients)
};

RS_HD bool prefers_bucketed(int64_t n, int64_t nn, CostModel c) {
  if (n < 2) return false;
  const double steps = ::log2(2.0 * static_cast<double>(n));
  const double pairwise = static_cast<double>(n) * static_cast<double>(n + nn);
  const double bucketed = steps * (c.per_negative * static_cast<double>(nn) +
                                   c.per_positive * static_cast<double>(n));
  return pairwise > bucketed;
}

// How a backend is asked to choose (the `algorithm` argument, as the C ABI passes it).
enum Algorithm : int { kPairwise = 0, kBucketed = 1, kAuto = 2 };

}  // namespace rspose
