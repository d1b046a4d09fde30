#pragma once
// Keyed random streams. Every random draw in dtrainer comes from a stream identified by
// (seed, purpose, step, index) — never from process-local state — so a sample's timestep, noise
// and dropout decisions do not depend on which rank draws them or how many ranks there are.
// Streams are counter-based (SplitMix64 over the hashed key): cheap to create per sample.

#include <cstdint>

namespace dtrainer {

enum class RngPurpose : uint64_t {
  kTimestep = 1,
  kNoise = 2,
  kTextDropout = 3,
  kControlDropout = 4,
  kTextPadding = 5,
  kSampler = 6,
  kModelInit = 7,
  kDataOrder = 8,
  kAugment = 9,
  kSynthesis = 10,
  kCaptionChoice = 11,
  kFlip = 12,
  kDatasetMix = 13,
  kEvaluation = 14,  // bootstrap resamples and sampling noise of alignment evaluations
  kCrop = 15,        // [S2] crop-scale pre-training: each sample's crop (data/crop_scale.h)
  kTokenMask = 16,   // MDT's masked training: the step's mask ratio and each sample's hidden tokens
  kEncode = 17,      // dtdata encode: each item's random crop and sampled latent (data/encode_dataset.h)
};

// SplitMix64 finaliser: a bijective 64-bit mix.
uint64_t mix64(uint64_t x);
// Key of the stream for (seed, purpose, step, index); distinct inputs give independent streams.
uint64_t stream_key(uint64_t seed, RngPurpose purpose, uint64_t step, uint64_t index);

class StreamRng {
 public:
  explicit StreamRng(uint64_t key) : state_(key) {}
  uint64_t next_u64();
  double uniform();  // in [0, 1), 53 random bits
  double normal();   // standard normal (Box-Muller on two uniforms)

 private:
  uint64_t state_;
};

}  // namespace dtrainer
