#pragma once
// Text-token padding policies ([S2] §4, SPEC §4). Prompts arrive ragged ([L_i, D] each, as stored
// in the shards) and leave as a [B, T, D] batch plus a [B, T] attention mask.
//   zero            tokens after L are zeros and masked out
//   replicate       the L tokens repeat cyclically up to T (m = ceil(T / L) copies), all attended
//   noisy_replicate replicate, and the copies (not the original L tokens) get Gaussian noise of
//                   variance beta_txt, scaled by sqrt(m - 1) * sigma_ch: std sqrt(beta_txt) * sqrt(m - 1)
//                   * sigma_ch, sigma_ch = per-channel std of the prompt's L tokens (population std).
//                   [S2] (§4): "additive Gaussian noise with a small variance beta_txt", best 0.02.
//                   (dtrainer before 2026-12 read beta_txt as the std factor: docs/DIFFUSION.md.)

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/diffusion/text_padding_policy.h"

namespace dtrainer::diffusion {

struct TextPaddingConfig {
  TextPadding policy = TextPadding::kZero;
  int64_t max_tokens = 77;  // T
  double beta_txt = 0.02;  // the noise's variance before the sqrt(m - 1) * sigma_ch scaling
  uint64_t seed = 0;
};

struct PaddedText {
  torch::Tensor tokens;  // [B, T, D] float32 (prompts of any float dtype are converted)
  torch::Tensor mask;    // [B, T] bool, true = attend
};

// prompts[i] is [L_i, D] with L_i >= 1 (longer prompts are truncated to T); sample_ids and step
// key the noise of noisy_replicate. Throws Error naming the prompt on bad shapes.
PaddedText pad_text(const std::vector<torch::Tensor>& prompts, const TextPaddingConfig& config,
                    const std::vector<int64_t>& sample_ids, int64_t step);

}  // namespace dtrainer::diffusion
