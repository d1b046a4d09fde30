#pragma once
// The building blocks of the UNet family, named exactly like their diffusers counterparts so that
// `named_parameters()` matches UNet2DConditionModel (SD layout) and diffusers' IF UNet (IF layout).
// Private to src/models: users see models/unet.h only.

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <optional>

#include "dtrainer/models/control_embedding.h"
#include "dtrainer/models/embeddings.h"
#include "dtrainer/models/unet_plan.h"

namespace dtrainer::models::unet_detail {

enum class Act { kSiLU, kGELU };
torch::Tensor activate(Act act, const torch::Tensor& x);

// A block that takes the feature map and the time embedding: res blocks and samplers.
struct TembBlock : torch::nn::Module {
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) = 0;
};

// A block that takes the feature map and the text tokens: transformer stacks and IF attention.
struct TextBlock : torch::nn::Module {
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& text, const torch::Tensor& mask) = 0;
};

// TimestepEmbedding: linear_1 -> act -> linear_2.
struct TimestepEmbedding : torch::nn::Module {
  TimestepEmbedding(int64_t in, int64_t out, Act act);
  torch::Tensor forward(const torch::Tensor& features);
  torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};
  Act act;
};

// ResnetBlock2D: norm1 -> act -> [resample] -> conv1 -> + time (add, or IF scale-shift in norm2)
// -> norm2 -> act -> conv2, plus the (1x1-projected when channels change) input.
struct ResnetBlock : TembBlock {
  ResnetBlock(const ResnetPlan& plan, const UNetSpec& spec);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) override;
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};
  Resample resample;
  bool scale_shift;  // IF layout: FiLM time conditioning, no activation on the time embedding
  Act act;
};

// Downsample2D (stride-2 3x3 conv) / Upsample2D (nearest x2, then 3x3 conv).
struct ConvSampler : TembBlock {
  explicit ConvSampler(const ConvSamplerPlan& plan);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) override;
  torch::nn::Conv2d conv{nullptr};
  Resample direction;
};

// diffusers Attention with bias-free q/k/v projections and to_out.0 (used for attn1 and attn2).
struct CrossAttention : torch::nn::Module {
  CrossAttention(int64_t dim, int64_t kv_dim, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& mask);
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, out{nullptr};
  torch::nn::ModuleList to_out;
  int64_t heads;
};

// GEGLU feed-forward: net.0.proj (dim -> 2 inner), gelu gate, net.2 (inner -> dim).
struct GegluProj : torch::nn::Module {
  GegluProj(int64_t dim, int64_t inner);
  torch::nn::Linear proj{nullptr};
};
struct FeedForward : torch::nn::Module {
  FeedForward(int64_t dim, int64_t inner);
  torch::Tensor forward(const torch::Tensor& x);
  std::shared_ptr<GegluProj> geglu;
  torch::nn::Linear out{nullptr};
  torch::nn::ModuleList net;
};

// BasicTransformerBlock: LN -> self-attention, LN -> cross-attention to text, LN -> GEGLU FF.
struct BasicTransformerBlock : torch::nn::Module {
  BasicTransformerBlock(int64_t dim, int64_t context_dim, int64_t heads, int64_t ff_inner);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& text, const torch::Tensor& mask);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  std::shared_ptr<CrossAttention> attn1, attn2;
  std::shared_ptr<FeedForward> ff;
};

// Transformer2DModel: GroupNorm -> proj_in -> blocks -> proj_out, plus the input.
struct Transformer2D : TextBlock {
  Transformer2D(const AttentionPlan& plan, const UNetSpec& spec);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& text, const torch::Tensor& mask) override;
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
  torch::nn::Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
  std::vector<std::shared_ptr<BasicTransformerBlock>> blocks;
};

// IF attention block (diffusers Attention with added_kv_proj_dim): the text tokens, group-normed,
// are projected by add_k/add_v_proj and prepended to the pixels' own keys and values.
struct IFAttention : TextBlock {
  IFAttention(const AttentionPlan& plan, const UNetSpec& spec);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& text, const torch::Tensor& mask) override;
  torch::nn::GroupNorm group_norm{nullptr}, norm_cross{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, add_k_proj{nullptr}, add_v_proj{nullptr}, out{nullptr};
  torch::nn::ModuleList to_out;
  int64_t heads;
};

// The UNet's units that are no module of their own (their layers keep diffusers' top-level names):
// the stem (time embedding, plus [S2]'s control embedding when there is one), conv_in, and the
// head (conv_norm_out, conv_out).
// A class-conditional UNet's stem also holds the class table and returns {temb, context}: the
// label's row as the one token [B, 1, context_dim] cross-attention reads.
struct Stem {
  std::shared_ptr<TimestepEmbedding> time;
  ControlEmbedding control{nullptr};
  torch::nn::Embedding class_table{nullptr};
  std::vector<torch::Tensor> forward(const torch::Tensor& features, const std::optional<ControlInputs>& controls,
                                     const torch::Tensor& labels);
};
struct ConvIn {
  torch::nn::Conv2d conv{nullptr};
  torch::Tensor forward(const torch::Tensor& x);
};
struct Head {
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d conv{nullptr};
  Act act = Act::kSiLU;
  torch::Tensor forward(const torch::Tensor& h);
};

// One of down_blocks.i / mid_block / up_blocks.i, with its children under diffusers' names.
struct Stage : torch::nn::Module {
  Stage(const StagePlan& plan, const UNetSpec& spec);
  std::vector<std::shared_ptr<TembBlock>> resnets, samplers;
  std::vector<std::shared_ptr<TextBlock>> attentions;
};

}  // namespace dtrainer::models::unet_detail
