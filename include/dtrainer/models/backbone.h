#pragma once
// The backbones as modules, behind one interface — the training loop has no backbone-specific code.
// A backbone is resolved from a preset name plus key=value field overrides by the torch-free
// registry (models/backbone_spec.h) and built here.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "dtrainer/models/backbone_spec.h"
#include "dtrainer/models/control_embedding.h"
#include "dtrainer/models/transformer_spec.h"
#include "dtrainer/models/unet_spec.h"
#include "dtrainer/models/unit_runner.h"

namespace dtrainer::models {

class Backbone {
 public:
  virtual ~Backbone() = default;
  // x_t [B, C, H, W], t [B], text [B, T, D], text_mask [B, T] bool (undefined: every token is
  // real, and attention runs without a mask — the fastest fused kernels), controls nullable. Computes in
  // the parameters' dtype (fp32, or bf16 under a bf16 compute copy); returns fp32.
  virtual torch::Tensor forward(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                                const torch::Tensor& text_mask, const ControlInputs* controls) = 0;
  // MDT's masked forward (models/token_mask.h): only the image tokens `keep` [B, n] reach the
  // encoder. Backbones without masked training throw Error("keep").
  virtual torch::Tensor forward_masked(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                                       const torch::Tensor& text_mask, const ControlInputs* controls,
                                       const torch::Tensor& keep) = 0;
  virtual torch::nn::Module& module() = 0;
  virtual UnitModel& unit_model() = 0;
};

std::unique_ptr<Backbone> build_backbone(const BackboneSpec& spec);

}  // namespace dtrainer::models
