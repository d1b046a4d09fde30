#pragma once
// [S2] control conditioning: c_emb = E_h(phi_h) + gamma_c(t) * E_l(phi_l), added to the timestep
// embedding. E_h and E_l embed each scalar with sinusoidal features and pass the concatenation
// through a 2-layer SiLU MLP. Text never enters here (it conditions through attention only).

#include <cstdint>
#include <memory>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "dtrainer/models/control_counts.h"

namespace dtrainer::models {

struct ControlInputs {
  torch::Tensor high;        // [B, 4] phi_h
  torch::Tensor low;         // [B, 2] phi_l
  torch::Tensor low_weight;  // [B] gamma_c(t) per sample (diffusion::power_cosine_gamma)
  torch::Tensor keep;        // [B] bool; false = the sample's controls are dropped (null embedding 0)
};

namespace unet_detail {
struct TimestepEmbedding;
}

class ControlEmbeddingImpl : public torch::nn::Module {
 public:
  // feature_dim: sinusoidal features per scalar; out_dim: the time-embedding width.
  ControlEmbeddingImpl(int64_t feature_dim, int64_t out_dim);
  // Returns [B, out_dim]. Bad shapes throw dtrainer::Error naming "controls.<field>".
  torch::Tensor forward(const ControlInputs& controls);

 private:
  int64_t feature_dim_;
  std::shared_ptr<unet_detail::TimestepEmbedding> high_, low_;
};
TORCH_MODULE(ControlEmbedding);

}  // namespace dtrainer::models
