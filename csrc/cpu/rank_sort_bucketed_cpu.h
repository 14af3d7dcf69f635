// The bucketed algorithm on the CPU (docs/MATH.md, "The bucketed algorithm"; docs/DESIGN.md
// §5b): the twin of the pairwise pass A / pass B of rank_sort_cpu.cpp, the same losses and
// gradients in O(ñ·log n + n·log n) per row, with the arithmetic of csrc/rank_sort_bucketed_math.h.
// Header-only: rank_sort_cpu.cpp (the CPU kernel's one translation unit) includes it, so
// whatever links that file — the module, the CUDA emulation test — has both algorithms.
//
// bucketed_row works on the row rank_sort_cpu.cpp's prep compacted:
//   idx[0..n)       element indices of the positives (index order), idx[n..n+nn) of the
//                   negatives that survive pruning;
//   cs              their scores in that order; y_row the row's labels (read at idx[0..n)).
// Its scores must be finite (rank_sort_cpu sends the other rows to the pairwise path). It
// writes *rank, *sort and, when need_grad, grad_row[idx[..]] (the rest of grad_row stays 0).
//
// Per row, in this order:
//   1. sort the positives by score (only them: the heatmap is never sorted);
//   2. breakpoint keys (lo_k, hi_k merged; δ = 0: the scores), one bucket per element by one
//      search, histograms per bucket with suffix sums (negatives: count, Σs; positives: 1, s,
//      1 − y, (1 − y)s) -> F, A, C and the H' sums of every positive;
//   3. one Fenwick sweep over the buckets in label order (strictly lower labels inserted)
//      -> Z and its (1 − y)-weighted twin; T = A − Z, D = C − Zw;
//   4. coefficients (rank_sort_math.h's finish_identity / finish_exact), row means;
//   5. gradient: negatives α[q] + β[q]·s from prefix sums of the coefficients over sorted
//      positives; positives by one more Fenwick sweep over sorted positions.
// One row is one thread's work and every sum is taken in double in a fixed order: the result
// does not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../rank_sort_bucketed_math.h"

namespace rspose {
namespace bucketed_detail {

// Per-thread buffers, reused from row to row (sizes O(n + ñ)).
struct Scratch {
  std::vector<int32_t> order;       // sorted position -> compacted positive index
  std::vector<double> u, w;         // per sorted positive: score − row offset, 1 − y
  std::vector<double> y;            // per sorted positive: label
  std::vector<double> key;          // breakpoint keys, ascending
  std::vector<int32_t> lo_before;   // [nk + 1]: lo keys among the first q keys
  std::vector<int32_t> lut;         // bucket_table's bins
  std::vector<int32_t> ql, qh;      // per sorted positive: first bucket with a > k / b > k
  std::vector<int32_t> qpos;        // per sorted positive: the bucket of its own score
  std::vector<int32_t> qneg;        // per negative: its bucket
  std::vector<double> sneg;         // per negative: score − row offset
  std::vector<double> neg_suf;      // [nb + 1][2]: suffix sums of (1, s) over negatives
  std::vector<double> pos_suf;      // [nb + 1][4]: suffix sums of (1, s, w, ws) over positives
  std::vector<double> fen;          // Fenwick nodes
  std::vector<int32_t> by_label;    // sorted positions by (label, position)
  std::vector<double> coef;         // per sorted positive: K coefficients
  std::vector<double> pre;          // prefix sums of coefficients over sorted positions
  std::vector<double> alpha, beta;  // per bucket: a negative's gradient α + β·s
};

inline Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

template <typename V>
inline V* sized(std::vector<V>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

template <typename V>
inline V* zeroed(std::vector<V>& v, size_t n) {
  v.assign(n, V(0));
  return v.data();
}

// Longest run of keys in one table bin that bucket_scan scans; a row with a longer one (many
// tied positive scores) takes bucket_lookup's binary search instead.
constexpr int32_t kMaxScan = 8;

// The most keys any bin of `b` holds (kMaxScan + 1 when over kMaxScan, or when `b` has no
// table).
inline int32_t max_bin_keys(const BucketTable& b) {
  if (b.nbins == 0) return kMaxScan + 1;
  int32_t m = 0;
  for (int32_t t = 0; t < b.nbins; ++t) m = std::max(m, b.lut[t + 1] - b.lut[t]);
  return std::min(m, kMaxScan + 1);
}

// bucket_lookup's answer, #{key ≤ s}, by counting over the `run` keys from the bin's first
// one (then +inf sentinels): the keys are sorted, so those ≤ s are a prefix of the window
// and their count is the step from the bin's start, with independent loads and no
// data-dependent branch. The only branches are the (almost always false) checks that the
// window held the answer, as in bucket_lookup: when the bin arithmetic's rounding points
// elsewhere, the full search decides.
__attribute__((always_inline)) inline int32_t bucket_scan(double s, const BucketTable& b,
                                                          int32_t run) {
  if (run > kMaxScan) return bucket_lookup(s, b);
  const double t = (s - b.key[0]) * b.inv_width;
  if (!(t >= 0.0 && t < static_cast<double>(b.nbins))) return bucket_lookup(s, b);
  const int32_t lo = b.lut[static_cast<int32_t>(t)];
  if (lo > 0 && b.key[lo - 1] > s) return bucket_of(s, b.key, b.nk);
  int32_t c = 0;
  for (int32_t k = 0; k < run; ++k) c += b.key[lo + k] <= s;
  const int32_t q = lo + c;
  if (q < b.nk && b.key[q] <= s) return bucket_of(s, b.key, b.nk);
  return q;
}

template <typename T, bool HARD, bool EXACT>
void row_impl(const int32_t* idx, const T* cs, const T* y_row, int32_t n, int32_t nn, double delta,
              bool need_grad, T* rank, T* sort, T* grad_row) {
  Scratch& S = scratch();
  const double inv2d = HARD ? 0.0 : 0.5 / delta;
  const size_t un = static_cast<size_t>(n);

  // 1. Sort the positives by (score, index): a total order, so the result is reproducible.
  int32_t* order = sized(S.order, un);
  for (int32_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order, order + n,
            [cs](int32_t a, int32_t b) { return cs[a] < cs[b] || (cs[a] == cs[b] && a < b); });
  // Scores relative to the median positive: band sums then cancel less (the keys and the
  // searches use the same shifted values, exact for float32 scores).
  const double offset = static_cast<double>(cs[order[n / 2]]);
  double* u = sized(S.u, un);
  double* w = sized(S.w, un);
  double* y = sized(S.y, un);
  for (int32_t k = 0; k < n; ++k) {
    u[k] = static_cast<double>(cs[order[k]]) - offset;
    y[k] = static_cast<double>(y_row[idx[order[k]]]);
    w[k] = 1.0 - y[k];
  }

  // 2. Keys, buckets, histograms.
  const int32_t nk = HARD ? n : 2 * n;
  const int32_t nb = nk + 1;  // buckets q = 0..nk
  // nk keys, then up to kMaxScan sentinels for bucket_scan.
  double* key = sized(S.key, static_cast<size_t>(nk) + kMaxScan);
  int32_t* lo_before = sized(S.lo_before, static_cast<size_t>(nb));
  int32_t* ql = sized(S.ql, un);
  int32_t* qh = sized(S.qh, un);
  if (HARD) {
    for (int32_t k = 0; k < n; ++k) {
      key[k] = u[k];
      ql[k] = qh[k] = k + 1;  // b(q) = q: b > k from q = k + 1 on
    }
  } else {
    // Merge the two ascending key lists; ql/qh: one past where lo_k / hi_k landed.
    int32_t i = 0, j = 0, q = 0;
    lo_before[0] = 0;
    while (q < nk) {
      const bool take_lo = i < n && (j >= n || key_lo(u[i], delta) <= key_hi(u[j], delta));
      if (take_lo) {
        key[q] = key_lo(u[i], delta);
        ql[i++] = q + 1;
      } else {
        key[q] = key_hi(u[j], delta);
        qh[j++] = q + 1;
      }
      ++q;
      lo_before[q] = i;
    }
  }
  // a(q) = lo_before[q] (positives whose ramp starts below the bucket), b(q) = q − a(q)
  // (those saturated); δ = 0 has no ramp: a = b = q.
  auto a_of = [&](int32_t q) { return HARD ? q : lo_before[q]; };
  auto b_of = [&](int32_t q) { return HARD ? q : q - lo_before[q]; };

  // Eight bins per key: most bins hold no key or one, so a search after the table is a
  // short branch-free count (bucket_scan); the answer is #{key ≤ s} however it is found.
  const int32_t nbins = 8 * nk;
  const BucketTable table =
      bucket_table(key, nk, sized(S.lut, static_cast<size_t>(nbins) + 1), nbins);
  const int32_t run = max_bin_keys(table);
  if (run <= kMaxScan)
    for (int32_t k = 0; k < run; ++k) key[nk + k] = INFINITY;  // the scan's sentinels
  int32_t* qpos = sized(S.qpos, un);
  for (int32_t k = 0; k < n; ++k) qpos[k] = bucket_scan(u[k], table, run);
  int32_t* qneg = sized(S.qneg, static_cast<size_t>(nn));
  double* sneg = sized(S.sneg, static_cast<size_t>(nn));
  double* ns = zeroed(S.neg_suf, static_cast<size_t>(nb + 1) * 2);
  for (int32_t j = 0; j < nn; ++j) {
    const double s = static_cast<double>(cs[n + j]) - offset;
    const int32_t q = bucket_scan(s, table, run);
    sneg[j] = s;
    qneg[j] = q;
    ns[q * 2] += 1.0;
    ns[q * 2 + 1] += s;
  }
  double* ps = zeroed(S.pos_suf, static_cast<size_t>(nb + 1) * 4);
  for (int32_t k = 0; k < n; ++k) {
    double* h = ps + static_cast<int64_t>(qpos[k]) * 4;
    h[0] += 1.0;
    h[1] += u[k];
    h[2] += w[k];
    h[3] += w[k] * u[k];
  }
  for (int32_t q = nb - 1; q >= 0; --q) {  // suffix sums: entry q = Σ over buckets ≥ q
    for (int c = 0; c < 2; ++c) ns[q * 2 + c] += ns[(q + 1) * 2 + c];
    for (int c = 0; c < 4; ++c) ps[q * 4 + c] += ps[(q + 1) * 4 + c];
  }

  // 3. Label-conditioned sums by a Fenwick tree over buckets, positives inserted in label
  // order: when positive k is queried, exactly those with y_j < y_k are in (a group of equal
  // labels is queried before it is inserted).
  int32_t* by_label = sized(S.by_label, un);
  for (int32_t k = 0; k < n; ++k) by_label[k] = k;
  std::sort(by_label, by_label + n,
            [y](int32_t a, int32_t b) { return y[a] < y[b] || (y[a] == y[b] && a < b); });
  constexpr int K = EXACT ? 6 : 3;
  double* coef = sized(S.coef, un * K);
  double sum_lr = 0.0, sum_es = 0.0;
  {
    double* fen = zeroed(S.fen, static_cast<size_t>(nb + 1) * 4);
    double tot[4] = {0.0, 0.0, 0.0, 0.0};  // everything inserted so far
    int32_t g0 = 0;
    while (g0 < n) {
      int32_t g1 = g0 + 1;
      while (g1 < n && y[by_label[g1]] == y[by_label[g0]]) ++g1;
      for (int32_t t = g0; t < g1; ++t) {
        const int32_t k = by_label[t];
        const double uk = u[k];
        const double* nl = ns + static_cast<int64_t>(ql[k]) * 2;
        const double* nh = ns + static_cast<int64_t>(qh[k]) * 2;
        const double* pl = ps + static_cast<int64_t>(ql[k]) * 4;
        const double* ph = ps + static_cast<int64_t>(qh[k]) * 4;
        double zl[4], zh[4];
        fenwick_prefix<4>(fen, qh[k], zh);
        if (HARD) {
          for (int c = 0; c < 4; ++c) zl[c] = zh[c];
        } else {
          fenwick_prefix<4>(fen, ql[k], zl);
        }
        // Saturated (bucket ≥ qh: H = 1) plus ramp (ql ≤ bucket < qh) of each sum.
        const double F = nh[0] + ramp_mass(nl[0] - nh[0], nl[1] - nh[1], uk, inv2d);
        const double A = ph[0] + ramp_mass(pl[0] - ph[0], pl[1] - ph[1], uk, inv2d);
        const double C = ph[2] + ramp_mass(pl[2] - ph[2], pl[3] - ph[3], uk, inv2d);
        const double zc = zh[0] - zl[0];  // lower-label positives on the ramp (a count)
        const double Z = (tot[0] - zh[0]) + ramp_mass(zc, zh[1] - zl[1], uk, inv2d);
        const double Zw = (tot[2] - zh[2]) + ramp_mass(zh[2] - zl[2], zh[3] - zl[3], uk, inv2d);
        const SumsA<double> a{F, A - Z, Z, C, C - Zw};
        double* c = coef + static_cast<int64_t>(k) * K;
        if (EXACT) {
          // H' sums: the ramp counts (and (1 − y)-weights) times 1/(2δ).
          const double Fd = (nl[0] - nh[0]) * inv2d;
          const double Zd = zc * inv2d;
          const double Td = ((pl[0] - ph[0]) - zc) * inv2d;
          const double Cd = (pl[2] - ph[2]) * inv2d;
          const double Dd = ((pl[2] - ph[2]) - (zh[2] - zl[2])) * inv2d;
          const ExactCoef<double> e = finish_exact(a, SumsA<double>{Fd, Td, Zd, Cd, Dd});
          sum_lr += e.lr;
          sum_es += e.es;
          store_coef(e, c);
        } else {
          const IdentityCoef<double> e = finish_identity(a);
          sum_lr += e.lr;
          sum_es += e.es;
          store_coef(e, c);
        }
      }
      for (int32_t t = g0; t < g1; ++t) {
        const int32_t k = by_label[t];
        const double v[4] = {1.0, u[k], w[k], w[k] * u[k]};
        fenwick_add<4>(fen, nb, qpos[k], v);
        for (int c = 0; c < 4; ++c) tot[c] += v[c];
      }
      g0 = g1;
    }
  }
  *rank = static_cast<T>(sum_lr / n);
  *sort = static_cast<T>(sum_es / n);
  if (!need_grad) return;

  // 5a. Negatives: g = α[q] + β[q]·s over the positives whose band holds the bucket.
  // Identity: Σ_{i<b} r_i + Σ_{b≤i<a} r_i·((s − u_i)/(2δ) + 1/2); exact: Σ_{b≤i<a} ∂F_i/(2δ).
  const double inv_n = 1.0 / n;
  double* pre = zeroed(S.pre, (un + 1) * 2);
  for (int32_t k = 0; k < n; ++k) {
    const double* c = coef + static_cast<int64_t>(k) * K;
    pre[(k + 1) * 2] = pre[k * 2] + c[0];                 // Σ r (identity) or Σ ∂F (exact)
    pre[(k + 1) * 2 + 1] = pre[k * 2 + 1] + c[0] * u[k];  // Σ r·u
  }
  double* alpha = sized(S.alpha, static_cast<size_t>(nb));
  double* beta = sized(S.beta, static_cast<size_t>(nb));
  for (int32_t q = 0; q < nb; ++q) {
    const int32_t a = a_of(q), b = b_of(q);
    const double dr = pre[a * 2] - pre[b * 2];
    if (EXACT) {
      alpha[q] = dr * inv2d;
      beta[q] = 0.0;
    } else {
      alpha[q] = pre[b * 2] + 0.5 * dr - (pre[a * 2 + 1] - pre[b * 2 + 1]) * inv2d;
      beta[q] = dr * inv2d;
    }
  }
  for (int32_t j = 0; j < nn; ++j) {
    const int32_t q = qneg[j];
    grad_row[idx[n + j]] = static_cast<T>((alpha[q] + beta[q] * sneg[j]) * inv_n);
  }

  // 5b. Positives: self + a sweep over sorted positions i in label order.
  // Identity: Σ_{y_i > y_k} q_i·H(u_k − u_i) (descending labels, query before insert);
  // exact: Σ_{ramp} (∂A_i + ∂C_i·w_k) + Σ_{ramp, y_i ≤ y_k} (∂T_i + ∂D_i·w_k), all ×1/(2δ)
  // (ascending labels, insert before query).
  double* fen = zeroed(S.fen, (un + 1) * 2);
  if (EXACT) {
    for (int32_t k = 0; k < n; ++k) {  // unconditioned prefix sums of ∂A, ∂C
      const double* c = coef + static_cast<int64_t>(k) * K;
      pre[(k + 1) * 2] = pre[k * 2] + c[1];
      pre[(k + 1) * 2 + 1] = pre[k * 2 + 1] + c[2];
    }
  }
  int32_t g0 = 0;
  while (g0 < n) {
    // EXACT walks by_label forwards, identity backwards (t = position in the walk).
    auto at = [&](int32_t t) { return by_label[EXACT ? t : n - 1 - t]; };
    int32_t g1 = g0 + 1;
    while (g1 < n && y[at(g1)] == y[at(g0)]) ++g1;
    for (int pass = 0; pass < 2; ++pass) {
      const bool insert = (pass == 0) == EXACT;
      for (int32_t t = g0; t < g1; ++t) {
        const int32_t k = at(t);
        const double* c = coef + static_cast<int64_t>(k) * K;
        if (insert) {
          const double v[2] = {EXACT ? c[3] : c[1], EXACT ? c[4] : c[1] * u[k]};
          fenwick_add<2>(fen, n, k, v);
          continue;
        }
        const int32_t a = a_of(qpos[k]), b = b_of(qpos[k]);
        double fa[2], fb[2];
        fenwick_prefix<2>(fen, b, fb);
        fenwick_prefix<2>(fen, a, fa);
        double g;
        if (EXACT) {
          g = c[5] + ((pre[a * 2] - pre[b * 2]) + w[k] * (pre[a * 2 + 1] - pre[b * 2 + 1]) +
                      (fa[0] - fb[0]) + w[k] * (fa[1] - fb[1])) *
                         inv2d;
        } else {
          const double dq = fa[0] - fb[0];
          g = c[2] + fb[0] + 0.5 * dq + (u[k] * dq - (fa[1] - fb[1])) * inv2d;
        }
        grad_row[idx[order[k]]] = static_cast<T>(g * inv_n);
      }
    }
    g0 = g1;
  }
}

}  // namespace bucketed_detail

template <typename T>
void bucketed_row(const int32_t* idx, const T* cs, const T* y_row, int32_t n, int32_t nn,
                  double delta, bool exact, bool need_grad, T* rank, T* sort, T* grad_row) {
  if (n <= 0) {
    *rank = *sort = T(0);
    return;
  }
  using bucketed_detail::row_impl;
  if (exact)
    row_impl<T, false, true>(idx, cs, y_row, n, nn, delta, need_grad, rank, sort, grad_row);
  else if (delta > 0)
    row_impl<T, false, false>(idx, cs, y_row, n, nn, delta, need_grad, rank, sort, grad_row);
  else
    row_impl<T, true, false>(idx, cs, y_row, n, nn, delta, need_grad, rank, sort, grad_row);
}

}  // namespace rspose
