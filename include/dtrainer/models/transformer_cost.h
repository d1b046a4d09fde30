#pragma once
// Analytic parameter table and compute of a TransformerSpec (same conventions as unet_cost.h):
// macs_linear_conv = weight MACs of linear / conv layers, macs_attention = QK^T and AV products,
// per sample and one forward. The tests prove the table equals the built module's parameters.

#include <cstdint>
#include <vector>

#include "dtrainer/models/transformer_spec.h"
#include "dtrainer/models/unet_cost.h"

namespace dtrainer::models {

struct TransformerCost {
  std::vector<ParamEntry> params;
  int64_t num_params = 0;
  OpCount total;           // one forward of the whole input
  OpCount training_extra;  // MDT with masking: its masked forward, at the mean mask ratio (mask_ratio + 0.1)
};

// text_len: T text tokens (cross / joint attention and the caption MLP run on them).
TransformerCost count_transformer(const TransformerSpec& spec, int64_t text_len);

}  // namespace dtrainer::models
