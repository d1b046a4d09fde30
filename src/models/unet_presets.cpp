#include "dtrainer/models/unet_presets.h"

#include "dtrainer/core/error.h"

namespace dtrainer::models {
namespace {

UNetSpec preset(const std::string& name, UNetLayout layout, int64_t channels, std::vector<int64_t> channel_mult,
                int64_t res_blocks, std::vector<int64_t> transformer_depth, int64_t mid_depth) {
  UNetSpec s;
  s.name = name;
  s.layout = layout;
  s.model_channels = channels;
  s.channel_mult = std::move(channel_mult);
  s.num_res_blocks = {res_blocks};
  s.transformer_depth = std::move(transformer_depth);
  s.mid_transformer_depth = mid_depth;
  return s;
}

// SD2 family: attention at levels 0-2 with TD 1, a plain deepest level, and a depth-1 transformer
// in the mid block (the mid block does not follow the deepest level here).
UNetSpec sd2(const std::string& name, int64_t channels) {
  return preset(name, UNetLayout::kStableDiffusion, channels, {1, 2, 4, 4}, 2, {1, 1, 1, 0}, 1);
}

// DeepFloyd-IF family: 3 res blocks per level, attention at the first three levels, attention mid.
UNetSpec if_xl(const std::string& name, int64_t channels) {
  return preset(name, UNetLayout::kDeepFloydIF, channels, {1, 2, 3, 4}, 3, {1, 1, 1, 0}, 1);
}

// SDXL family: three levels, no attention at level 0, mid block depth = deepest level's TD (-1).
UNetSpec sdxl(const std::string& name, int64_t channels, std::vector<int64_t> td) {
  return preset(name, UNetLayout::kStableDiffusion, channels, {1, 2, 4}, 2, std::move(td), -1);
}

// [S2] Table A1's class-conditional UNet on ImageNet (401.75 M) is latent diffusion's ImageNet UNet
// (LDM cin256): 192 channels, multipliers 1, 2, 3, 5, one transformer block at the three lower
// resolutions and in the mid block, 32-wide heads, the 1000 classes + null as one 512-wide context
// token (docs/MODELS.md "[S2]'s model table"); on the table's 4 x 32 x 32 latents, not LDM's
// 3 x 64 x 64 (3.5 K parameters apart).
UNetSpec imagenet_unet(const std::string& name) {
  UNetSpec s = preset(name, UNetLayout::kStableDiffusion, 192, {1, 2, 3, 5}, 2, {0, 1, 1, 1}, -1);
  s.head_dim = 32;
  s.context_dim = 512;
  s.num_classes = 1000;
  return s;
}

UNetSpec tiny(const std::string& name) {
  UNetSpec s = preset(name, UNetLayout::kStableDiffusion, 32, {1, 2}, 1, {0, 1}, -1);
  s.head_dim = 16;
  s.norm_groups = 8;
  return s;
}

}  // namespace

const std::vector<UNetSpec>& unet_presets() {
  static const std::vector<UNetSpec> presets = {
      sd2("sd2", 320), sd2("sd2-c512", 512), if_xl("if-xl-c512", 512), if_xl("if-xl-c704", 704),
      sdxl("sdxl", 320, {0, 2, 10}), sdxl("sdxl-c128", 128, {0, 2, 10}), sdxl("sdxl-c192", 192, {0, 2, 10}),
      sdxl("sdxl-c384", 384, {0, 2, 10}), sdxl("sdxl-td2", 320, {0, 2, 2}), sdxl("sdxl-td4", 320, {0, 2, 4}),
      sdxl("sdxl-td12", 320, {0, 2, 12}), sdxl("sdxl-td14", 320, {0, 2, 14}), sdxl("sdxl-td4_4", 320, {0, 4, 4}),
      sdxl("sdxl-td4_8", 320, {0, 4, 8}), sdxl("sdxl-td4_12", 320, {0, 4, 12}),
      sdxl("sdxl-c384-td4_12", 384, {0, 4, 12}),
      // [S2] Table A1's UNet-SDXL on CC12M (864.31 M): SDXL's layout with one transformer block at
      // the full-resolution level and two at the others (862.92 M; docs/MODELS.md "[S2]'s model table").
      sdxl("s2-unet-sdxl", 320, {1, 2, 2}), imagenet_unet("s2-unet-sdxl-class"),
      tiny("unet-tiny"),  // not in [S1]: the quickstart's 1.1M-parameter SDXL-layout UNet
  };
  return presets;
}

bool is_unet_preset(const std::string& name) {
  for (const auto& p : unet_presets())
    if (p.name == name) return true;
  return false;
}

UNetSpec unet_preset(const std::string& name) {
  for (const auto& p : unet_presets())
    if (p.name == name) return p;
  std::string known;
  for (const auto& p : unet_presets()) known += (known.empty() ? "" : ", ") + p.name;
  throw Error("model", "unknown UNet preset '" + name + "' (known: " + known + ")");
}

}  // namespace dtrainer::models
