#pragma once
// Classifier-free guidance and [S2]'s disentangled control guidance (SPEC §3-4).

#include <functional>

#include <torch/types.h>

namespace dtrainer::diffusion {

// eps = lam * eps_cond + (1 - lam) * eps_uncond
torch::Tensor classifier_free_guidance(const torch::Tensor& eps_cond, const torch::Tensor& eps_uncond, double lam);

// [S2] Eq. 2, with c = text and s = controls:
//   eps = lam * [beta * eps(c, s) + (1 - beta) * eps(null, s)] + (1 - lam) * eps(null, null)
// beta = 1 gives plain CFG against eps(null, null); lam = 1 gives the bracket, the control-guided
// conditional prediction (eps(c, s) itself when beta = 1 too).
torch::Tensor control_guidance(const torch::Tensor& eps_text_control, const torch::Tensor& eps_null_control,
                               const torch::Tensor& eps_null_null, double lam, double beta);

// A model that can be evaluated with or without the text and the control conditions.
using ConditionalModel = std::function<torch::Tensor(const torch::Tensor& x_t, const torch::Tensor& t_model,
                                                     bool with_text, bool with_control)>;
// A prediction function of (x_t, t_model), as samplers consume.
using Denoiser = std::function<torch::Tensor(const torch::Tensor& x_t, const torch::Tensor& t_model)>;

struct GuidanceConfig {
  double scale = 7.5;         // lam
  double control_beta = 1.0;  // beta of Eq. 2; 1 = no separate control guidance
};

// Wraps `model` into a guided denoiser, evaluating only the terms Eq. 2 needs for (lam, beta).
Denoiser guided_denoiser(ConditionalModel model, GuidanceConfig config);

}  // namespace dtrainer::diffusion
