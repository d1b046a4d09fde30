#include "dtrainer/models/unet_spec.h"

#include <algorithm>

#include "dtrainer/core/error.h"
#include "dtrainer/core/parse.h"

namespace dtrainer::models {

const NameTable<UNetLayout>& name_table(UNetLayout) {
  static const NameTable<UNetLayout> t{{"sd", UNetLayout::kStableDiffusion}, {"if", UNetLayout::kDeepFloydIF}};
  return t;
}
const char* to_string(UNetLayout layout) { return name_table(layout).name(layout); }
UNetLayout parse_unet_layout(const std::string& field, const std::string& text) {
  return name_table(UNetLayout{}).parse(field, text);
}

int64_t UNetSpec::res_blocks(int64_t level) const {
  return num_res_blocks.size() == 1 ? num_res_blocks[0] : num_res_blocks.at(level);
}

int64_t UNetSpec::mid_depth() const {
  return mid_transformer_depth >= 0 ? mid_transformer_depth : transformer_depth.back();
}

std::vector<int64_t> UNetSpec::attention_levels() const {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < static_cast<int64_t>(transformer_depth.size()); ++l)
    if (transformer_depth[l] > 0) out.push_back(l);
  return out;
}

void UNetSpec::validate() const {
  auto fail = [](const std::string& field, const std::string& what) { throw Error("model." + field, what); };
  const int64_t levels = num_levels();
  if (levels < 1) fail("channel_mult", "needs at least one level");
  if (model_channels < 1) fail("model_channels", "must be positive");
  for (int64_t m : channel_mult)
    if (m < 1) fail("channel_mult", "every multiplier must be positive (got " + format_int_list(channel_mult) + ")");
  if (num_res_blocks.size() != 1 && static_cast<int64_t>(num_res_blocks.size()) != levels)
    fail("num_res_blocks", "has " + std::to_string(num_res_blocks.size()) + " entries but channel_mult has " +
                               std::to_string(levels) + " levels (give one value or one per level)");
  for (int64_t r : num_res_blocks)
    if (r < 1) fail("num_res_blocks", "every level needs at least one res block");
  if (static_cast<int64_t>(transformer_depth.size()) != levels)
    fail("transformer_depth", "has " + std::to_string(transformer_depth.size()) + " entries but channel_mult has " +
                                  std::to_string(levels) + " levels");
  for (int64_t d : transformer_depth)
    if (d < 0) fail("transformer_depth", "depths must be >= 0 (got " + format_int_list(transformer_depth) + ")");
  if (mid_transformer_depth < -1) fail("mid_transformer_depth", "must be >= 0, or -1 for 'same as the deepest level'");
  if (context_dim < 1) fail("context_dim", "must be positive");
  if (head_dim < 1) fail("head_dim", "must be positive");
  if (in_channels < 1) fail("in_channels", "must be positive");
  if (out_channels < 1) fail("out_channels", "must be positive");
  if (norm_groups < 1) fail("norm_groups", "must be positive");
  if (ff_mult < 1) fail("ff_mult", "must be positive");
  if (time_embed_mult < 1) fail("time_embed_mult", "must be positive");
  if (control_feature_dim < 2 || control_feature_dim % 2 != 0)
    fail("control_feature_dim", "must be a positive even number");
  if (num_classes < 0) fail("num_classes", "must be >= 0 (0 = text conditioning)");
  if (model_channels % 2 != 0) fail("model_channels", "must be even (sinusoidal timestep features)");
  const int64_t factor = int64_t{1} << (levels - 1);
  if (sample_size < 1 || sample_size % factor != 0)
    fail("sample_size", std::to_string(sample_size) + " is not divisible by 2^(levels-1) = " + std::to_string(factor));
  for (int64_t l = 0; l < levels; ++l) {
    const int64_t ch = level_channels(l);
    if (ch % norm_groups != 0)
      fail("model_channels", "level " + std::to_string(l) + " has " + std::to_string(ch) +
                                 " channels, not divisible by norm_groups=" + std::to_string(norm_groups));
    const bool has_attention = transformer_depth[l] > 0 || (l == levels - 1 && mid_depth() > 0);
    if (has_attention && ch % head_dim != 0)
      fail("head_dim", "level " + std::to_string(l) + " has " + std::to_string(ch) +
                           " channels, not divisible by head_dim=" + std::to_string(head_dim));
  }
  if (layout == UNetLayout::kDeepFloydIF) {
    for (int64_t d : transformer_depth)
      if (d > 1) fail("transformer_depth", "the IF layout has one attention block per res block: use 0 or 1 per level");
    if (mid_depth() > 1) fail("mid_transformer_depth", "the IF layout's mid block has one attention block: use 0 or 1");
    if (context_dim % norm_groups != 0)
      fail("context_dim",
           "the IF layout group-normalises the text tokens: context_dim must be divisible by norm_groups");
  }
}

const std::vector<UNetField>& unet_fields() {
  static const std::vector<UNetField> fields = {
      {"layout", "block layout: sd (diffusers SD2/SDXL) or if (DeepFloyd-IF)"},
      {"model_channels", "C, channels of the first level"},
      {"channel_mult", "channel multiplier per level, e.g. 1,2,4"},
      {"num_res_blocks", "res blocks per level on the down path (one value or one per level)"},
      {"transformer_depth", "transformer blocks per attention layer, per level (0 = no attention)"},
      {"attention_levels", "levels (0 = full latent resolution) that have attention; rewrites transformer_depth"},
      {"mid_transformer_depth", "transformer depth of the mid block (-1 = deepest level's)"},
      {"context_dim", "width D_txt of the text token embeddings"},
      {"head_dim", "attention head width"},
      {"in_channels", "latent channels in"},
      {"out_channels", "channels predicted"},
      {"sample_size", "latent height = width the model is described at"},
      {"norm_groups", "GroupNorm groups"},
      {"use_linear_projection", "transformer proj_in/proj_out as Linear (true) or 1x1 conv (false)"},
      {"ff_mult", "feed-forward inner width multiplier"},
      {"time_embed_mult", "time embedding width as a multiple of C"},
      {"control_conditioning",
       "[S2] control conditions (crop, flip, aspect, original size) added to the time embedding"},
      {"control_feature_dim", "sinusoidal features per control scalar"},
      {"num_classes", "0 = text-conditional; N = class-conditional (N classes + null, one context token)"},
  };
  return fields;
}

void set_unet_field(UNetSpec& s, const std::string& key, const std::string& v) {
  const std::string f = "model." + key;
  if (key == "layout")
    s.layout = parse_unet_layout(f, v);
  else if (key == "model_channels")
    s.model_channels = parse_int(f, v);
  else if (key == "channel_mult")
    s.channel_mult = parse_int_list(f, v);
  else if (key == "num_res_blocks")
    s.num_res_blocks = parse_int_list(f, v);
  else if (key == "transformer_depth")
    s.transformer_depth = parse_int_list(f, v);
  else if (key == "attention_levels") {
    const auto levels = parse_int_list(f, v);
    for (int64_t l : levels)
      if (l < 0 || l >= static_cast<int64_t>(s.transformer_depth.size()))
        throw Error(f, "level " + std::to_string(l) + " does not exist (levels 0.." +
                           std::to_string(s.transformer_depth.size() - 1) + ")");
    for (int64_t l = 0; l < static_cast<int64_t>(s.transformer_depth.size()); ++l) {
      const bool listed = std::find(levels.begin(), levels.end(), l) != levels.end();
      if (!listed)
        s.transformer_depth[l] = 0;
      else if (s.transformer_depth[l] == 0)
        s.transformer_depth[l] = 1;
    }
  } else if (key == "mid_transformer_depth")
    s.mid_transformer_depth = parse_int(f, v);
  else if (key == "context_dim")
    s.context_dim = parse_int(f, v);
  else if (key == "head_dim")
    s.head_dim = parse_int(f, v);
  else if (key == "in_channels")
    s.in_channels = parse_int(f, v);
  else if (key == "out_channels")
    s.out_channels = parse_int(f, v);
  else if (key == "sample_size")
    s.sample_size = parse_int(f, v);
  else if (key == "norm_groups")
    s.norm_groups = parse_int(f, v);
  else if (key == "use_linear_projection")
    s.use_linear_projection = parse_bool(f, v);
  else if (key == "ff_mult")
    s.ff_mult = parse_int(f, v);
  else if (key == "time_embed_mult")
    s.time_embed_mult = parse_int(f, v);
  else if (key == "control_conditioning")
    s.control_conditioning = parse_bool(f, v);
  else if (key == "control_feature_dim")
    s.control_feature_dim = parse_int(f, v);
  else if (key == "num_classes")
    s.num_classes = parse_int(f, v);
  else {
    std::string known;
    for (const auto& field : unet_fields()) known += (known.empty() ? "" : ", ") + field.key;
    throw Error(f, "unknown UNet field (known: " + known + ")");
  }
}

std::string get_unet_field(const UNetSpec& s, const std::string& key) {
  if (key == "layout") return to_string(s.layout);
  if (key == "model_channels") return std::to_string(s.model_channels);
  if (key == "channel_mult") return format_int_list(s.channel_mult);
  if (key == "num_res_blocks") return format_int_list(s.num_res_blocks);
  if (key == "transformer_depth") return format_int_list(s.transformer_depth);
  if (key == "attention_levels") return format_int_list(s.attention_levels());
  if (key == "mid_transformer_depth") return std::to_string(s.mid_transformer_depth);
  if (key == "context_dim") return std::to_string(s.context_dim);
  if (key == "head_dim") return std::to_string(s.head_dim);
  if (key == "in_channels") return std::to_string(s.in_channels);
  if (key == "out_channels") return std::to_string(s.out_channels);
  if (key == "sample_size") return std::to_string(s.sample_size);
  if (key == "norm_groups") return std::to_string(s.norm_groups);
  if (key == "use_linear_projection") return s.use_linear_projection ? "true" : "false";
  if (key == "ff_mult") return std::to_string(s.ff_mult);
  if (key == "time_embed_mult") return std::to_string(s.time_embed_mult);
  if (key == "control_conditioning") return s.control_conditioning ? "true" : "false";
  if (key == "control_feature_dim") return std::to_string(s.control_feature_dim);
  if (key == "num_classes") return std::to_string(s.num_classes);
  throw Error("model." + key, "unknown UNet field");
}

}  // namespace dtrainer::models
