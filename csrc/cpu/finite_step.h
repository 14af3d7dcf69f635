// H of csrc/rank_sort_math.h's step as the CPU kernel's inner loops evaluate it
// (csrc/cpu/rank_sort_cpu.cpp): the same float, with fewer instructions where the row allows.
//
// step_smooth clamps v = x/(2δ) + 1/2 with NaN-preserving selects, which GCC vectorises as
// six compares and blends per lane (about half of a pass-A negative term). On a float row
// whose live scores are all finite, with a finite 1/(2δ), v is never NaN (a finite x times a
// finite 1/(2δ) is finite or ±inf) and never −0 (x/(2δ) + 1/2 rounds to +0 when it is zero),
// and for such v clamping on the bits is exact: a negative float has its sign bit set, and
// non-negative floats order like their bit patterns. Three integer vector instructions.
// tests/test_finite_step.py checks clamp01_bits against clamp01 on every 32-bit pattern.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../rank_sort_math.h"

namespace rspose {

// clamp01(v) for every float v that is not NaN and not −0.
inline float clamp01_bits(float v) {
  int32_t b;
  std::memcpy(&b, &v, sizeof b);
  b &= ~(b >> 31);                      // sign bit set -> +0
  b = b < 0x3f800000 ? b : 0x3f800000;  // above 1.0f (0x3f800000) -> 1.0f, +inf included
  float h;
  std::memcpy(&h, &b, sizeof h);
  return h;
}

// FINITE: the caller guarantees the row is finite as above (and !HARD, T = float, for the
// bit clamp to apply); otherwise this is step itself.
template <typename T, bool HARD, bool FINITE>
inline T step_cpu(T x, const Step<T>& p) {
  if constexpr (FINITE && !HARD && std::is_same_v<T, float>) {
    return clamp01_bits(x * p.inv2d + 0.5f);
  } else {
    return step<T, HARD>(x, p);
  }
}

}  // namespace rspose
