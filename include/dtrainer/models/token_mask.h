#pragma once
// MDT's masked training (Gao et al. 2023, MDTv2): each step hides a fraction of every sample's image
// tokens from the encoder. The fraction is mask_ratio + U(0, 0.2), drawn once per step (every sample
// of the step keeps the same number of tokens); which tokens each sample keeps is drawn per sample.
// Both are keyed by (seed, step, sample id), so a sample's mask is the same on any number of ranks.

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace dtrainer::models {

// The fraction hidden at `step`: mask_ratio + 0.2 u, u uniform in [0, 1).
double token_mask_ratio(uint64_t seed, int64_t step, double mask_ratio);

// The kept token indices [B, n] int64, ascending, n = floor(tokens (1 - the step's ratio)) (at least 1).
torch::Tensor kept_tokens(uint64_t seed, int64_t step, const std::vector<int64_t>& sample_ids, int64_t tokens,
                          double mask_ratio);

}  // namespace dtrainer::models
