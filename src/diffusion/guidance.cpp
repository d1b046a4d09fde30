#include "dtrainer/diffusion/guidance.h"

#include <torch/torch.h>

namespace dtrainer::diffusion {

torch::Tensor classifier_free_guidance(const torch::Tensor& eps_cond, const torch::Tensor& eps_uncond, double lam) {
  return lam * eps_cond + (1.0 - lam) * eps_uncond;
}

torch::Tensor control_guidance(const torch::Tensor& eps_cs, const torch::Tensor& eps_ns, const torch::Tensor& eps_nn,
                               double lam, double beta) {
  return lam * (beta * eps_cs + (1.0 - beta) * eps_ns) + (1.0 - lam) * eps_nn;  // [S2] Eq. 2
}

Denoiser guided_denoiser(ConditionalModel model, GuidanceConfig c) {
  return [model = std::move(model), c](const torch::Tensor& x, const torch::Tensor& t) {
    const torch::Tensor cs = model(x, t, true, true);
    if (c.scale == 1.0 && c.control_beta == 1.0) return cs;
    const torch::Tensor ns = c.control_beta == 1.0 ? torch::zeros_like(cs) : model(x, t, false, true);
    const torch::Tensor nn = c.scale == 1.0 ? torch::zeros_like(cs) : model(x, t, false, false);
    return control_guidance(cs, ns, nn, c.scale, c.control_beta);
  };
}

}  // namespace dtrainer::diffusion
