#pragma once
// The conditions a diffusion model is trained and sampled with, as classifier-free guidance
// (SPEC §3) and [S2]'s control conditioning (SPEC §4) need them: the null text that stands for
// "no caption", the caption dropout applied to a training batch, and the per-sample weight
// gamma_c(t) of the low-level controls.

#include <cstdint>
#include <utility>

#include <torch/types.h>

namespace dtrainer::diffusion {

// The null text: one zero token (data-independent; the model learns what "no caption" means
// from the dropped samples). [batch, max_tokens, text_dim] float and its [batch, max_tokens] mask.
std::pair<torch::Tensor, torch::Tensor> null_text(int64_t batch, int64_t max_tokens, int64_t text_dim);

// Caption dropout: the samples whose keep[i] is false get the null text (text [B, T, D], mask [B, T]).
std::pair<torch::Tensor, torch::Tensor> drop_text(const torch::Tensor& text, const torch::Tensor& mask,
                                                  const torch::Tensor& keep);

// gamma_c(t) of [S2]'s power-cosine schedule for each sample's unit time t_unit [B]: [B] float32.
torch::Tensor control_low_weight(const torch::Tensor& t_unit);

}  // namespace dtrainer::diffusion
