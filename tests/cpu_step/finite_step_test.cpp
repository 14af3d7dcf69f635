// Exhaustive check of csrc/cpu/finite_step.h: clamp01_bits(v) has the bits of
// csrc/rank_sort_math.h's clamp01(v) for every float v that is not NaN and not −0 (the values
// step_cpu's FINITE path can meet). Prints the number of patterns compared and mismatches.
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "cpu/finite_step.h"

int main() {
  uint64_t compared = 0, mismatches = 0;
  for (uint64_t u = 0; u <= 0xffffffffull; ++u) {
    const uint32_t bits = static_cast<uint32_t>(u);
    float v;
    std::memcpy(&v, &bits, sizeof v);
    if (std::isnan(v) || bits == 0x80000000u) continue;
    const float want = rspose::clamp01(v), got = rspose::clamp01_bits(v);
    uint32_t a, b;
    std::memcpy(&a, &want, sizeof a);
    std::memcpy(&b, &got, sizeof b);
    ++compared;
    if (a != b && mismatches++ < 5)
      std::printf("v bits %08" PRIx32 ": clamp01 %08" PRIx32 ", clamp01_bits %08" PRIx32 "\n", bits,
                  a, b);
  }
  std::printf("compared %" PRIu64 " patterns, %" PRIu64 " mismatches\n", compared, mismatches);
  return mismatches == 0 ? 0 : 1;
}
