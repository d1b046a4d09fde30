#pragma once
// The model registry the trainer uses: a backbone built from a preset name plus key=value field
// overrides, behind one interface — the training loop has no backbone-specific code.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "dtrainer/models/control_embedding.h"
#include "dtrainer/models/transformer_spec.h"
#include "dtrainer/models/unet_spec.h"
#include "dtrainer/models/unit_runner.h"

namespace dtrainer::models {

// Per-sample forward cost at the trained latent size and text length.
struct BackboneCost {
  int64_t params = 0;
  int64_t macs_linear_conv = 0;  // [S1]'s convention: weight MACs of linear and conv layers
  int64_t macs_attention = 0;    // QK^T and AV products
  int64_t activation_elems = 0;  // outputs of every op of one forward (a memory estimate)
  // FLOPs of one training step per sample: forward + backward = 3 forwards, 2 FLOPs per MAC,
  // attention products included (what TFLOP/s and MFU count; recomputation is not counted).
  int64_t training_flops() const { return 3 * 2 * (macs_linear_conv + macs_attention); }
};

// What the data fixes and the model must match.
struct BackboneInputs {
  int64_t latent_channels = 4;
  int64_t latent_size = 32;  // H = W
  int64_t text_dim = 1024;
  int64_t text_len = 77;
};

// A resolved backbone: plain data, nothing allocated (dry runs of 4B-parameter models stay cheap).
struct BackboneSpec {
  std::string family = "unet";  // unet | transformer
  UNetSpec unet;
  TransformerSpec transformer;
  BackboneInputs inputs;
  bool control_conditioning() const;  // the model takes [S2] control inputs
};

class Backbone {
 public:
  virtual ~Backbone() = default;
  // x_t [B, C, H, W], t [B], text [B, T, D], text_mask [B, T] bool (undefined: every token is
  // real, and attention runs without a mask — the fastest fused kernels), controls nullable. Computes in
  // the parameters' dtype (fp32, or bf16 under a bf16 compute copy); returns fp32.
  virtual torch::Tensor forward(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                                const torch::Tensor& text_mask, const ControlInputs* controls) = 0;
  virtual torch::nn::Module& module() = 0;
  virtual UnitModel& unit_model() = 0;
};

// `preset` (a UNet or a transformer preset, `dtmodel list`) with `overrides` ("key=value", the
// spec's config keys) for data of shape `inputs`: in/out channels, sample size and context dim
// come from the data; an override that contradicts the data is an error naming the key.
// control_conditioning switches [S2]'s control embedding on (UNets; mmDiT++ always has it, the
// other transformers cannot). Throws Error naming the preset or the key.
BackboneSpec resolve_backbone(const std::string& preset, const std::vector<std::string>& overrides,
                              const BackboneInputs& inputs, bool control_conditioning);
BackboneCost backbone_cost(const BackboneSpec& spec);
std::string backbone_summary(const BackboneSpec& spec);  // one line: family, preset, key dimensions
// The preset's own input shape (for plans made without data).
BackboneInputs preset_inputs(const std::string& preset);
std::unique_ptr<Backbone> build_backbone(const BackboneSpec& spec);

}  // namespace dtrainer::models
