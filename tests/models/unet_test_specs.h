#pragma once
// Small UNet specs shared by the module tests: the same topology as a preset (levels, res blocks,
// transformer depths, layout) with few channels, so they build and run in milliseconds.

#include "dtrainer/models/unet_presets.h"

namespace dtrainer::test {

inline models::UNetSpec scaled_down(const std::string& preset, int64_t channels = 32) {
  models::UNetSpec s = models::unet_preset(preset);
  s.model_channels = channels;
  s.head_dim = 16;
  s.context_dim = 32;
  s.sample_size = 16;
  return s;
}

// sdxl-c128 with reduced depth: the "small override" of the foundation issue.
inline models::UNetSpec small_sdxl() {
  models::UNetSpec s = scaled_down("sdxl-c128");
  s.transformer_depth = {0, 1, 2};
  return s;
}

inline models::UNetSpec small_if() { return scaled_down("if-xl-c512"); }

}  // namespace dtrainer::test
