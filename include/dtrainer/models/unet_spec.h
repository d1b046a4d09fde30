#pragma once
// UNetSpec — the single description of a UNet backbone ([S1] §3, SPEC §2.1). The torch module
// (models/unet.h), the analytic counts (models/unet_cost.h) and the presets
// (models/unet_presets.h) are all derived from it. Plain data, no torch.

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/core/name_table.h"

namespace dtrainer::models {

enum class UNetLayout {
  kStableDiffusion,  // diffusers UNet2DConditionModel: CrossAttnDownBlock2D / Transformer2DModel
  kDeepFloydIF,      // DeepFloyd-IF: resampling ResBlocks, scale-shift time, added-KV attention
};
const NameTable<UNetLayout>& name_table(UNetLayout);  // sd | if
const char* to_string(UNetLayout layout);
UNetLayout parse_unet_layout(const std::string& field, const std::string& text);

struct UNetSpec {
  std::string name = "custom";
  UNetLayout layout = UNetLayout::kStableDiffusion;
  int64_t model_channels = 320;                      // C: channels of level 0
  std::vector<int64_t> channel_mult{1, 2, 4};        // channels of level l = C * channel_mult[l]
  std::vector<int64_t> num_res_blocks{2};            // per level (one value = every level); up path has +1
  std::vector<int64_t> transformer_depth{0, 2, 10};  // TD per level; 0 = no attention at that level
  int64_t mid_transformer_depth = -1;                // -1 = same as the deepest level (SDXL rule)
  int64_t context_dim = 1024;                        // D_txt of the text tokens cross-attention reads
  int64_t head_dim = 64;                             // attention head width; heads = channels / head_dim
  int64_t in_channels = 4;                           // latent channels C_lat
  int64_t out_channels = 4;
  int64_t sample_size = 32;           // latent H = W the model is described at (256 px / 8)
  int64_t norm_groups = 32;           // GroupNorm groups
  bool use_linear_projection = true;  // Transformer2DModel proj_in/out: Linear or 1x1 conv
  int64_t ff_mult = 4;                // GEGLU feed-forward inner width = ff_mult * channels
  int64_t time_embed_mult = 4;        // time embedding width = time_embed_mult * C
  bool control_conditioning = false;  // [S2] control embedding added to the time embedding
  int64_t control_feature_dim = 256;  // sinusoidal features per control scalar
  // 0: text-conditional (cross-attention reads the caption's tokens). N > 0: class-conditional as
  // latent diffusion's ImageNet UNet: a learned table of N classes + the null class (index N), whose
  // one token [1, context_dim] is the context every cross-attention reads.
  int64_t num_classes = 0;

  int64_t num_levels() const { return static_cast<int64_t>(channel_mult.size()); }
  int64_t level_channels(int64_t level) const { return model_channels * channel_mult.at(level); }
  int64_t res_blocks(int64_t level) const;
  int64_t time_embed_dim() const { return time_embed_mult * model_channels; }
  int64_t mid_depth() const;                      // resolves the -1 rule
  std::vector<int64_t> attention_levels() const;  // levels whose transformer_depth > 0
  int64_t heads(int64_t channels) const { return channels / head_dim; }

  // Throws dtrainer::Error naming the offending field ("model.<field>") on any inconsistency.
  void validate() const;
};

// Every field a user may override, by its config/CLI key (snake_case, e.g. "channel_mult").
struct UNetField {
  std::string key;
  std::string help;
};
const std::vector<UNetField>& unet_fields();
// Sets one field from its text form. "attention_levels" rewrites transformer_depth: listed levels
// with depth 0 get depth 1, unlisted levels get depth 0. Unknown keys and bad values throw Error.
void set_unet_field(UNetSpec& spec, const std::string& key, const std::string& value);
std::string get_unet_field(const UNetSpec& spec, const std::string& key);

}  // namespace dtrainer::models
