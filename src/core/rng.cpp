#include "dtrainer/core/rng.h"

#include <cmath>

namespace dtrainer {

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t stream_key(uint64_t seed, RngPurpose purpose, uint64_t step, uint64_t index) {
  uint64_t k = mix64(seed);
  k = mix64(k ^ static_cast<uint64_t>(purpose));
  k = mix64(k ^ step);
  return mix64(k ^ index);
}

uint64_t StreamRng::next_u64() {
  state_ += 0x9E3779B97F4A7C15ull;
  return mix64(state_);
}

double StreamRng::uniform() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

double StreamRng::normal() {
  const double u1 = 1.0 - uniform();  // (0, 1]
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

}  // namespace dtrainer
