#pragma once
// Analytic parameter and compute counts of a UNet, derived from its plan without allocating any
// weights (a 4B-parameter model costs a few kilobytes to describe). Tests prove the counts equal
// the built module's parameters and an instrumented forward pass.
//
// Compute conventions (SPEC §2.1), all per sample and one forward pass:
//   macs_linear_conv  weight MACs of convolution and linear layers only            ([S1] Table 1)
//   macs_attention    MACs of the attention products QK^T and AV
//   flops             2 x (macs_linear_conv + macs_attention)                       ([S2])
//   activation_elems  elements of the outputs of every conv, linear and norm layer plus every
//                     attention-probability matrix: the bulk of what backward keeps (elementwise
//                     temporaries such as SiLU outputs are not included), so a lower-bound estimate.

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/models/unet_spec.h"

namespace dtrainer::models {

struct ParamEntry {
  std::string name;  // e.g. "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
  std::vector<int64_t> shape;
  int64_t numel() const;
};

struct OpCount {
  int64_t macs_linear_conv = 0;
  int64_t macs_attention = 0;
  int64_t activation_elems = 0;
  int64_t flops() const { return 2 * (macs_linear_conv + macs_attention); }
  OpCount& operator+=(const OpCount& o);
};

// One top-level part of the model: "conv_in", "time_embedding", "down_blocks.i", "mid_block",
// "up_blocks.i", "conv_out" (conv_norm_out + conv_out).
struct StageCost {
  std::string name;
  int64_t level = -1;  // resolution level, -1 for parts that are not at one level
  int64_t params = 0;
  int64_t params_transformer = 0;
  OpCount ops;          // everything in the stage
  OpCount transformer;  // the part inside transformer stacks / attention blocks
};

struct UNetCostQuery {
  int64_t latent_h = 32;
  int64_t latent_w = 32;
  int64_t text_len = 77;  // T, text tokens cross-attention reads (a class-conditional UNet reads 1)
};

struct UNetCost {
  std::vector<ParamEntry> params;  // every parameter with its module name and shape
  std::vector<StageCost> stages;
  int64_t num_params = 0;
  int64_t params_transformer = 0;
  OpCount total;        // per sample, one forward
  OpCount transformer;  // per sample, inside transformer stacks / attention blocks
};

// Counts `spec` at the given latent size and text length. Validates the spec; also throws
// Error("latent size") when latent_h/latent_w are not divisible by 2^(levels-1).
UNetCost count_unet(const UNetSpec& spec, const UNetCostQuery& query);

}  // namespace dtrainer::models
