// The per-pair arithmetic of the Rank & Sort core (docs/MATH.md), written once and used by
// both the CPU kernel (csrc/cpu) and the CUDA kernels (csrc/cuda), so that the CPU tests
// exercise the very expressions the GPU evaluates. Everything here is a small inline
// function of scalars: the kernels decide the loop structure (tiles, SIMD, warps), these
// functions decide the numbers.
#pragma once

#if defined(__CUDACC__)
#define RS_HD __host__ __device__ __forceinline__
#else
#define RS_HD inline
#endif

namespace rspose {

// ε of the identity-update thresholds (F_i > ε, Z_i > ε): docs/DESIGN.md §2. The Python
// side's rspose_kernels.backends.EPS has the same value (tests/test_constants.py checks).
constexpr double kEps = 1e-10;
template <typename T>
RS_HD T eps() {
  return T(kEps);
}

// Parameters of the step function. `inv2d` = 1/(2δ) (unused when δ = 0).
template <typename T>
struct Step {
  T delta;
  T inv2d;
};

// H(x) = clamp(x/(2δ) + 1/2, 0, 1), δ > 0. Written with comparisons rather than fmin/fmax
// because those drop NaN: a NaN score must give a NaN loss (docs/DESIGN.md §9), never a
// finite one. `v < 0 ? 0 : v` also maps onto x86 max instructions with the NaN passing through.
template <typename T>
RS_HD T clamp01(T v) {
  v = v < T(0) ? T(0) : v;
  return v > T(1) ? T(1) : v;
}

template <typename T>
RS_HD T step_smooth(T x, T inv2d) {
  return clamp01(x * inv2d + T(0.5));
}

// H(x) = [x ≥ 0] for δ = 0, NaN staying NaN.
template <typename T>
RS_HD T step_hard(T x) {
  return x >= T(0) ? T(1) : (x < T(0) ? T(0) : x);
}

template <typename T, bool HARD>
RS_HD T step(T x, const Step<T>& p) {
  return HARD ? step_hard(x) : step_smooth(x, p.inv2d);
}

// H'(x) = 1/(2δ) for |x| < δ, else 0 (exact mode, δ > 0). Two comparisons joined by `&`,
// not `&&`: no short-circuit branch, so the CPU loops if-convert and vectorise.
template <typename T>
RS_HD T step_slope(T x, const Step<T>& p) {
  return ((x < p.delta) & (x > -p.delta)) ? p.inv2d : T(0);
}

// Pruning test of MATH.md: an element below `thr` = (min positive score) − δ has H = H' = 0
// against every positive concerned. Written as `s < thr` so a NaN never prunes.
template <typename T>
RS_HD bool prunable(T s, T thr) {
  return s < thr;
}

// NaN-propagating minimum: the pruning threshold of a row holding a NaN positive score is
// NaN, which prunes nothing, so the NaN reaches the loss through every sum.
template <typename T>
RS_HD T nan_min(T a, T b) {
  return (a != a || a < b) ? a : b;
}

// Pass A sums of one positive i over the elements j of its row (MATH.md, pass A).
// The same struct holds the H' sums of exact mode (A' = T' + Z').
template <typename T>
struct SumsA {
  T F;   // Σ_{j∈N} H(x_ij)
  T T_;  // Σ_{j∈P, y_j ≥ y_i} H(x_ij), j = i included
  T Z;   // Σ_{j∈P, y_j < y_i} H(x_ij)
  T C;   // Σ_{j∈P} H(x_ij)(1 − y_j)
  T D;   // Σ_{j∈P, y_j ≥ y_i} H(x_ij)(1 − y_j)
};

template <typename T>
RS_HD SumsA<T> sums_zero() {
  return SumsA<T>{T(0), T(0), T(0), T(0), T(0)};
}

// Adds element j to positive i's sums. `h` is H(x_ij) (or H'(x_ij)), `pos_j` whether j is a
// positive, `ge` whether y_j ≥ y_i, `w_j` = 1 − y_j. Selects rather than branches, so the
// CPU loops vectorise (blends) and the GPU warps do not diverge. The negative case reduces
// to `F += h`, which the kernels' negative-only sweeps write directly.
template <typename T>
RS_HD void accumulate_a(SumsA<T>& a, T h, bool pos_j, bool ge, T w_j) {
  const T hp = pos_j ? h : T(0);
  const T hw = hp * w_j;
  a.F += pos_j ? T(0) : h;
  a.T_ += ge ? hp : T(0);
  a.Z += ge ? T(0) : hp;
  a.C += hw;
  a.D += ge ? hw : T(0);
}

// Sums of two partial sweeps (fixed order: `a` first), for the reductions across lanes.
template <typename T>
RS_HD SumsA<T> sums_add(const SumsA<T>& a, const SumsA<T>& b) {
  return SumsA<T>{a.F + b.F, a.T_ + b.T_, a.Z + b.Z, a.C + b.C, a.D + b.D};
}

// Per-positive results of pass A in identity mode: the two errors and the coefficients
// pass B needs (r_i for negatives, q_i for lower-quality positives, the self term).
template <typename T>
struct IdentityCoef {
  T lr;    // ℓR_i
  T es;    // eS_i
  T r;     // ℓR_i / F_i  if F_i > ε else 0
  T q;     // eS_i / Z_i  if Z_i > ε else 0
  T self;  // −(ℓR_i [F_i > ε] + eS_i [Z_i > ε])
};

template <typename T>
RS_HD IdentityCoef<T> finish_identity(const SumsA<T>& a) {
  IdentityCoef<T> c;
  const T A = a.T_ + a.Z;  // > 0: it holds H(0) of j = i
  c.lr = a.F / (A + a.F);
  c.es = a.C / A - a.D / a.T_;
  const bool has_fp = a.F > eps<T>();
  const bool has_lower = a.Z > eps<T>();
  c.r = has_fp ? c.lr / a.F : T(0);
  c.q = has_lower ? c.es / a.Z : T(0);
  c.self = -((has_fp ? c.lr : T(0)) + (has_lower ? c.es : T(0)));
  return c;
}

// Per-positive results of pass A in exact mode: the partial derivatives of
// f_i = F/(A+F) + C/A − D/T and the self term −Σ ∂X_i · X'_i.
template <typename T>
struct ExactCoef {
  T lr, es;
  T dF, dA, dC, dT, dD;
  T self;
};

template <typename T>
RS_HD ExactCoef<T> finish_exact(const SumsA<T>& a, const SumsA<T>& d) {
  ExactCoef<T> c;
  const T A = a.T_ + a.Z;
  const T den = A + a.F;
  const T den2 = den * den;
  c.lr = a.F / den;
  c.es = a.C / A - a.D / a.T_;
  c.dF = A / den2;
  c.dA = -a.F / den2 - a.C / (A * A);
  c.dC = T(1) / A;
  c.dT = a.D / (a.T_ * a.T_);
  c.dD = T(-1) / a.T_;
  const T Ad = d.T_ + d.Z;
  c.self = -(c.dF * d.F + c.dA * Ad + c.dC * d.C + c.dT * d.T_ + c.dD * d.D);
  return c;
}

// The pass-B coefficients of a positive in the order every kernel stores them: identity
// (r, q, self), exact (dF, dA, dC, dT, dD, self).
template <typename T, typename U>
RS_HD void store_coef(const IdentityCoef<T>& e, U* c) {
  c[0] = e.r;
  c[1] = e.q;
  c[2] = e.self;
}

template <typename T, typename U>
RS_HD void store_coef(const ExactCoef<T>& e, U* c) {
  c[0] = e.dF;
  c[1] = e.dA;
  c[2] = e.dC;
  c[3] = e.dT;
  c[4] = e.dD;
  c[5] = e.self;
}

// Pass B, identity mode: the coefficient multiplying H(x_ij) in element j's gradient for
// positive i. Negatives take r_i from every positive; a positive j takes q_i from the
// positives of strictly higher quality. Multiply-free select, as in accumulate_a.
template <typename T>
RS_HD T coef_b_identity(bool neg_j, T y_j, T y_i, T r_i, T q_i) {
  return neg_j ? r_i : (y_i > y_j ? q_i : T(0));
}

// Pass B, exact mode: the coefficient multiplying H'(x_ik) in element k's gradient for
// positive i (MATH.md, exact gradient). `w_k` = 1 − y_k.
template <typename T>
RS_HD T coef_b_exact(bool neg_k, T y_k, T w_k, T y_i, T dF, T dA, T dC, T dT, T dD) {
  const T upper = y_k >= y_i ? dT + dD * w_k : T(0);
  return neg_k ? dF : dA + dC * w_k + upper;
}

}  // namespace rspose
