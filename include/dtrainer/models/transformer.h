#pragma once
// DiffusionTransformer — the LibTorch module of a TransformerSpec: DiT, PixArt-α, mmDiT, mmDiT++
// (SPEC §2.2). Parameter names follow the reference implementations (facebookresearch/DiT,
// PixArt-alpha, SD3's mmdit), e.g. "blocks.3.attn.qkv.weight", "joint_blocks.0.x_block.attn.ln_q.weight".
// Units (models/unit_runner.h), in forward order: "embed" (patch, timestep, text / class /
// control embeddings), every block, "final_layer".

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "dtrainer/models/control_embedding.h"
#include "dtrainer/models/transformer_spec.h"
#include "dtrainer/models/unit.h"
#include "dtrainer/models/unit_runner.h"

namespace dtrainer::models {

namespace transformer_detail {
struct Embed;
struct DiTBlock;
struct JointBlock;
struct FinalLayer;
struct MDTBlock;
struct SideInterpolater;
}  // namespace transformer_detail

class DiffusionTransformerImpl : public torch::nn::Module, public UnitModel {
 public:
  explicit DiffusionTransformerImpl(const TransformerSpec& spec);

  // x_t [B, C, H, W] (H, W divisible by patch_size; another size than sample_size evaluates the
  // positional embedding per pos_embed_grid), t [B], text [B, T, context_dim] with text_mask [B, T]
  // bool (optional), controls (mmDiT++ only; nullptr = dropped), labels [B] int64 (class-conditional
  // DiT only; num_classes = the null class). Returns the prediction [B, in_channels, H, W] (the
  // learned-variance channels of learn_sigma models are dropped).
  // keep [B, n] int64 (MDT only, models/token_mask.h): the masked forward, in which only those image
  // tokens reach the encoder and the side-interpolater restores the others.
  torch::Tensor forward(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                        const torch::Tensor& text_mask = torch::Tensor(), const ControlInputs* controls = nullptr,
                        const torch::Tensor& labels = torch::Tensor(), const torch::Tensor& keep = torch::Tensor());
  // The full output, [B, out_channels, H, W].
  torch::Tensor forward_all(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                            const torch::Tensor& text_mask, const ControlInputs* controls, const torch::Tensor& labels,
                            const torch::Tensor& keep = torch::Tensor());

  const TransformerSpec& spec() const { return spec_; }

 private:
  TransformerSpec spec_;
  // The units, registered in forward order: the embeddings, the blocks (DiT / PixArt, or mmDiT's
  // joint blocks), the final layer.
  Unit<transformer_detail::Embed> embed_;
  std::vector<Unit<transformer_detail::DiTBlock>> dit_blocks_;
  std::vector<Unit<transformer_detail::JointBlock>> joint_blocks_;
  std::vector<Unit<transformer_detail::MDTBlock>> mdt_blocks_;  // MDT: encoder in, encoder out, decoder
  Unit<transformer_detail::SideInterpolater> side_;
  Unit<transformer_detail::FinalLayer> final_;
  torch::Tensor pos_cache_;  // positional embedding of the last grid seen
  std::pair<int64_t, int64_t> pos_grid_{0, 0};
};
TORCH_MODULE(DiffusionTransformer);

}  // namespace dtrainer::models
