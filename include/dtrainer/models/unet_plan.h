#pragma once
// UNetPlan — the block topology of a UNetSpec: which blocks exist, their channels, the resolution
// level each runs at, and their names in diffusers' UNet2DConditionModel layout (the IF layout
// uses diffusers' IF naming). Both the torch module and the analytic counter are built from it,
// so names, shapes and counts cannot drift apart. Torch-free.

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/models/unet_spec.h"

namespace dtrainer::models {

enum class Resample { kNone, kDown, kUp };

// A ResnetBlock2D. `level` is the resolution level of its input (level l = latent size / 2^l).
// In the IF layout a resampling ResBlock (resample != kNone) halves or doubles the resolution
// itself; its convolutions run at the output level.
struct ResnetPlan {
  std::string name;  // e.g. "down_blocks.1.resnets.0", "down_blocks.0.downsamplers.0" (IF)
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t level = 0;
  Resample resample = Resample::kNone;
};

// SD layout: a Transformer2DModel of `depth` BasicTransformerBlocks.
// IF layout: one attention block with extra text key/value projections (depth is always 1).
struct AttentionPlan {
  std::string name;  // e.g. "down_blocks.1.attentions.0"
  int64_t channels = 0;
  int64_t depth = 0;
  int64_t level = 0;
};

// SD layout: Downsample2D (stride-2 conv) or Upsample2D (nearest x2, then conv).
struct ConvSamplerPlan {
  std::string name;  // "down_blocks.0.downsamplers.0" / "up_blocks.0.upsamplers.0"
  int64_t channels = 0;
  int64_t level = 0;  // level of the input
  Resample direction = Resample::kDown;
};

// One of down_blocks.i / mid_block / up_blocks.i. Down and up stages run resnets[j] then
// attentions[j] (when present) for each j, then their sampler; the mid block runs
// resnets[0], attentions[0] (when present), resnets[1].
struct StagePlan {
  std::string name;
  int64_t level = 0;
  std::vector<ResnetPlan> resnets;
  std::vector<AttentionPlan> attentions;
  std::vector<ConvSamplerPlan> conv_samplers;  // SD layout: at most one
  std::vector<ResnetPlan> resnet_samplers;     // IF layout: at most one
};

struct UNetPlan {
  UNetSpec spec;
  std::vector<StagePlan> down;
  StagePlan mid;
  std::vector<StagePlan> up;
};

// Validates the spec and derives its plan (skip-connection channels included).
UNetPlan plan_unet(const UNetSpec& spec);

}  // namespace dtrainer::models
