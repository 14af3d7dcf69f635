// The arithmetic of the bucketed algorithm (docs/MATH.md, "The bucketed algorithm";
// docs/DESIGN.md §5b), written once for the CPU kernel (csrc/cpu/rank_sort_bucketed_cpu.h)
// and the CUDA kernels (csrc/cuda/rank_sort_bucketed_kernels.cuh). Small inline functions over raw
// arrays: breakpoints and the bucket search, band (ramp) masses, a Fenwick tree, the fixed point of
// the GPU's histograms, and the per-row cost model. Everything is accumulated in double (or
// in that fixed point): a band sum is a difference of two prefix sums over a whole row.
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

// The same bucket, found in O(1) expected: a uniform table over [key[0], key[nk−1]] gives,
// per bin, the keys that can hold the answer, and a short search among them finishes. The
// table only narrows the search and the result is checked against the keys around it (a
// failed check falls back to the full search), so rounding in the bin arithmetic can never
// change a bucket. `lut` has nbins + 1 entries, lut[t] ≤ #{key < key[0] + t·width}.
struct BucketTable {
  const double* key;
  int32_t nk;
  const int32_t* lut;
  int32_t nbins;
  double inv_width;  // nbins / (key[nk−1] − key[0]); 0 when there is no table
};

RS_HD int32_t bucket_lookup(double s, const BucketTable& b) {
  if (b.nk == 0) return 0;
  const double t = (s - b.key[0]) * b.inv_width;
  if (!(t >= 0.0 && t < static_cast<double>(b.nbins))) {
    if (s < b.key[0]) return 0;
    if (s >= b.key[b.nk - 1]) return b.nk;
    return bucket_of(s, b.key, b.nk);
  }
  const int32_t bin = static_cast<int32_t>(t);
  const int32_t lo = b.lut[bin], hi = b.lut[bin + 1];
  if ((lo > 0 && b.key[lo - 1] > s) || (hi < b.nk && b.key[hi] <= s))
    return bucket_of(s, b.key, b.nk);
  return lo + bucket_of(s, b.key + lo, hi - lo);
}

// Fills lut[0..nbins] for sorted keys (one merge sweep) and returns the table.
RS_HD BucketTable bucket_table(const double* key, int32_t nk, int32_t* lut, int32_t nbins) {
  BucketTable b{key, nk, lut, 0, 0.0};
  if (nk < 2 || nbins < 1 || !(key[nk - 1] > key[0])) return b;
  const double width = (key[nk - 1] - key[0]) / nbins;
  int32_t k = 0;
  for (int32_t t = 0; t < nbins; ++t) {
    const double edge = key[0] + t * width;
    while (k < nk && key[k] < edge) ++k;
    lut[t] = k;
  }
  lut[nbins] = nk;
  b.nbins = nbins;
  b.inv_width = nbins / (key[nk - 1] - key[0]);
  return b;
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

// Fixed point for sums that must not depend on the order of their terms (the GPU's
// histograms are filled by integer atomics, docs/DESIGN.md §5: no floating-point atomics). A row's
// values v with |v| ≤ vmax, at most `count` of them, are stored as round(v / unit) in int64:
// unit is the power of two with count·vmax/unit < 2^62, so no sum of them overflows, and
// each value is off by at most unit/2 ≈ count·vmax·2^-63 (1e-13 relative at 49k pixels; a
// band sum of c values by c·unit/2: the GPU's F is then ~c/2 ulps of double coarser than
// the CPU's double sums, far below float32's rounding).
// Powers of two keep v/unit and k·unit exact; the exponent is clamped so that unit and
// 1/unit both stay normal doubles.
struct FixedPoint {
  double unit, inv_unit;
};

RS_HD FixedPoint fixed_point_for(double vmax, int64_t count) {
  const double bound = vmax * static_cast<double>(count > 1 ? count : 1);
  int ex = 0;
  if (bound > 0.0) ::frexp(bound, &ex);  // bound < 2^ex
  ex = ex < -960 ? -960 : ex;
  return FixedPoint{::ldexp(1.0, ex - 62), ::ldexp(1.0, 62 - ex)};
}

RS_HD int64_t to_fixed(double v, const FixedPoint& f) {
  return static_cast<int64_t>(::llrint(v * f.inv_unit));
}

RS_HD double from_fixed(int64_t k, const FixedPoint& f) { return static_cast<double>(k) * f.unit; }

// How a backend is asked to choose (the `algorithm` argument, as the C ABI passes it).
enum Algorithm : int { kPairwise = 0, kBucketed = 1, kAuto = 2 };

// Per-row cost model (docs/MATH.md, "Choosing per row"), in units of one positive-negative
// pair evaluation of the pairwise kernel: pairwise work is n·(ñ + positive_pairs·n) (a
// positive-positive pair reduces five sums, a positive-negative one only F); bucketed work is
// ~log2(2n) steps per element (bucket search, histogram, Fenwick sweeps over the positives)
// plus, where the bucketed path keeps the positive-positive terms pairwise (the CUDA kernels,
// csrc/cuda/rank_sort_bucketed_kernels.cuh), bucketed_positive_pairs·n².
// The constants are calibrated per backend (python -m bench.calibrate) and live with each
// backend (rspose_kernels/backends/native.py: CPU_COST, CUDA_COST), which passes them here.
struct CostModel {
  double per_negative;                   // one negative's bucketed work, per log2(2n) step
  double per_positive;                   // one positive's bucketed work, per log2(2n) step
  double positive_pairs;                 // a positive-positive pair of the pairwise kernel
  double bucketed_positive_pairs = 0.0;  // ... of the bucketed path (0: none, the CPU's)
};

RS_HD bool prefers_bucketed(int64_t n, int64_t nn, CostModel c) {
  if (n < 2) return false;
  const double nd = static_cast<double>(n), nnd = static_cast<double>(nn);
  const double steps = ::log2(2.0 * nd);
  const double pairwise = nd * (nnd + c.positive_pairs * nd);
  const double bucketed =
      steps * (c.per_negative * nnd + c.per_positive * nd) + c.bucketed_positive_pairs * nd * nd;
  return pairwise > bucketed;
}

// Which rows may go bucketed at all, and the limits of that rule (cost_model.py's RESOLVE and
// SPAN_LIMIT have the same values; tests/test_constants.py checks). A band sum is
// (Σs − s_i·Σ1)/(2δ): its rounding grows as |s|/δ, so a row whose δ does not resolve at its
// scores' scale (δ < kResolve·max|s|, e.g. δ = 1e-14 on O(1) logits) stays pairwise, where H
// is evaluated per pair (docs/MATH.md, "Choosing per row"); δ = 0, the step, has no such
// division. So does a row whose score differences could overflow a double (max|s| ≥
// kSpanLimit, float64 only) and one with a non-finite live score (NaN and ±inf propagate
// through the pairwise sums exactly as the definition says; a band sum would make inf − inf).
constexpr double kResolve = 0x1p-20;     // smallest δ / max|s| of a bucketed row
constexpr double kSpanLimit = 0x1p1000;  // max|s| of a bucketed row stays below it

// The per-row choice, evaluated by the CPU kernel (csrc/cpu/rank_sort_cpu.cpp) and on the
// device by the CUDA compaction (csrc/cuda/rank_sort_kernels.cuh): whether a row with n
// positives and nkeep negatives left after pruning goes bucketed under `algorithm`. span:
// max |s| over its live (positive or kept) scores; nonfinite: one of them is NaN or ±inf;
// max_pos: the backend's capacity (positives a bucketed row may have).
RS_HD bool takes_bucketed(int64_t n, int64_t nkeep, double span, bool nonfinite, double delta,
                          int algorithm, int64_t max_pos, CostModel cost) {
  if (algorithm == kPairwise || n <= 0 || n > max_pos || nonfinite) return false;
  const bool resolves = span < kSpanLimit && (delta == 0 || delta >= span * kResolve);
  return resolves && (algorithm == kBucketed || prefers_bucketed(n, nkeep, cost));
}

}  // namespace rspose
