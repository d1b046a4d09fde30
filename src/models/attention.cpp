#include "dtrainer/models/attention.h"

#include <cmath>

#include <torch/torch.h>
#include <torch/version.h>

namespace dtrainer::models {

torch::Tensor attention_explicit(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                 const torch::Tensor& key_mask) {
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  if (key_mask.defined())
    scores = scores.masked_fill(~key_mask.view({key_mask.size(0), 1, 1, key_mask.size(1)}), -INFINITY);
  return torch::matmul(torch::softmax(scores, -1), v);
}

#if TORCH_VERSION_MAJOR >= 2
bool fused_attention_available() { return true; }
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask) {
  if (!key_mask.defined()) return at::scaled_dot_product_attention(q, k, v);
  return at::scaled_dot_product_attention(q, k, v, key_mask.view({key_mask.size(0), 1, 1, key_mask.size(1)}));
}
#else
bool fused_attention_available() { return false; }
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask) {
  return attention_explicit(q, k, v, key_mask);
}
#endif

}  // namespace dtrainer::models
