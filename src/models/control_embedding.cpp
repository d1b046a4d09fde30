#include "dtrainer/models/control_embedding.h"

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "unet_blocks.h"

namespace dtrainer::models {

using unet_detail::Act;
using unet_detail::TimestepEmbedding;

ControlEmbeddingImpl::ControlEmbeddingImpl(int64_t feature_dim, int64_t out_dim) : feature_dim_(feature_dim) {
  high_ = register_module("high",
                          std::make_shared<TimestepEmbedding>(kHighLevelControls * feature_dim, out_dim, Act::kSiLU));
  low_ =
      register_module("low", std::make_shared<TimestepEmbedding>(kLowLevelControls * feature_dim, out_dim, Act::kSiLU));
}

static torch::Tensor scalar_features(const torch::Tensor& values, int64_t dim) {
  std::vector<torch::Tensor> parts;
  for (int64_t j = 0; j < values.size(1); ++j) parts.push_back(timestep_features(values.select(1, j), dim));
  return torch::cat(parts, 1);
}

torch::Tensor ControlEmbeddingImpl::forward(const ControlInputs& c) {
  auto check = [](const torch::Tensor& t, const char* name, std::vector<int64_t> shape) {
    if (!t.defined() || t.sizes().vec() != shape) {
      std::string want = "[";
      for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
      throw Error(std::string("controls.") + name, "expected shape " + want + "]");
    }
  };
  const int64_t B = c.high.defined() ? c.high.size(0) : 0;
  check(c.high, "high", {B, kHighLevelControls});
  check(c.low, "low", {B, kLowLevelControls});
  check(c.low_weight, "low_weight", {B});
  check(c.keep, "keep", {B});
  const torch::Tensor dtype_ref = high_->linear_1->weight;
  const torch::Tensor e_high = high_->forward(scalar_features(c.high, feature_dim_).to(dtype_ref.dtype()));
  const torch::Tensor e_low = low_->forward(scalar_features(c.low, feature_dim_).to(dtype_ref.dtype()));
  const torch::Tensor emb = e_high + c.low_weight.to(e_low.dtype()).unsqueeze(1) * e_low;  // E_h + gamma_c(t) E_l
  return emb * c.keep.to(emb.dtype()).unsqueeze(1);
}

}  // namespace dtrainer::models
