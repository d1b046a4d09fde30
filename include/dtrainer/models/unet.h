#pragma once
// UNet — the LibTorch module of a UNetSpec (SD2 / SDXL / DeepFloyd-IF layouts, SPEC §2.1).
// Parameter names follow diffusers' UNet2DConditionModel (IF UNet for the IF layout), e.g.
// "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight".

#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "dtrainer/models/control_embedding.h"
#include "dtrainer/models/unet_spec.h"
#include "dtrainer/models/unit.h"
#include "dtrainer/models/unit_runner.h"

namespace dtrainer::models {

namespace unet_detail {
struct TimestepEmbedding;
struct Stage;
struct Stem;
struct ConvIn;
struct Head;
struct TembBlock;
struct TextBlock;
}  // namespace unet_detail

// Units (models/unit_runner.h), in forward order: "time_embedding" (with the control embedding and
// the class table),
// "conv_in", every res block, transformer stack and sampler under its diffusers name, "conv_out"
// (with conv_norm_out).
class UNetImpl : public torch::nn::Module, public UnitModel {
 public:
  // Validates the spec (throws dtrainer::Error naming the field) and builds every layer.
  explicit UNetImpl(const UNetSpec& spec);

  // x_t [B, in_channels, H, W] (H, W divisible by 2^(levels-1)), t [B] timesteps (any real dtype),
  // text [B, T, context_dim] token embeddings, text_mask [B, T] bool (true = real token; optional:
  // none attends to every token; every row needs at least one true, checked for a mask on the CPU), controls: [S2]
  // control conditions — only for a model built with control_conditioning; nullptr there means "controls dropped" (the
  // null condition). A class-conditional model (num_classes > 0) reads labels [B] (int64, 0..num_classes; num_classes
  // = the null class) instead of text and text_mask, which must be undefined. Returns the prediction
  // [B, out_channels, H, W]. Bad inputs throw dtrainer::Error naming them.
  torch::Tensor forward(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                        const torch::Tensor& text_mask = torch::Tensor(), const ControlInputs* controls = nullptr,
                        const torch::Tensor& labels = torch::Tensor());

  const UNetSpec& spec() const { return spec_; }

 private:
  void check_inputs(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                    const torch::Tensor& text_mask, const torch::Tensor& labels) const;

  UNetSpec spec_;
  torch::nn::Conv2d conv_in_{nullptr}, conv_out_{nullptr};
  torch::nn::GroupNorm conv_norm_out_{nullptr};
  std::shared_ptr<unet_detail::TimestepEmbedding> time_embedding_;
  std::vector<std::shared_ptr<unet_detail::Stage>> down_, up_;
  std::shared_ptr<unet_detail::Stage> mid_;
  ControlEmbedding control_embedding_{nullptr};
  std::shared_ptr<torch::nn::Module> class_embedder_;  // num_classes > 0: holds "embedding_table"
  // The units, registered in forward order: a stage's res blocks (each followed by its attention
  // block, if any), then its samplers.
  struct StageUnits {
    std::vector<Unit<unet_detail::TembBlock>> resnets, samplers;
    std::vector<Unit<unet_detail::TextBlock>> attentions;
  };
  Unit<unet_detail::Stem> stem_;
  Unit<unet_detail::ConvIn> conv_in_unit_;
  std::vector<StageUnits> down_units_, up_units_;
  StageUnits mid_units_;
  Unit<unet_detail::Head> head_;
};
TORCH_MODULE(UNet);

}  // namespace dtrainer::models
