#include "dtrainer/models/attention.h"

#include <cmath>

#include <torch/torch.h>
#include <torch/version.h>

namespace dtrainer::models {

torch::Tensor attention_explicit(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                 const torch::Tensor& key_mask) {
  // As batched GEMMs over B x H, with the 1/sqrt(d) scale applied to q (Nq x d) rather than to the
  // Nq x Nk scores: a smaller pass, forward and backward. (baddbmm with the scale as alpha over an
  // empty input at beta 0, as diffusers does, made NaN outputs in the UNet tests here; the cause was
  // not found: a NaN-filled input alone is ignored by it on LibTorch 1.13.)
  const int64_t B = q.size(0), H = q.size(1), nq = q.size(2), nk = k.size(2), d = q.size(3);
  const torch::Tensor q3 = q.reshape({B * H, nq, d}) * (1.0 / std::sqrt(static_cast<double>(d)));
  const torch::Tensor k3 = k.reshape({B * H, nk, d}), v3 = v.reshape({B * H, nk, d});
  torch::Tensor scores = torch::bmm(q3, k3.transpose(1, 2));
  if (key_mask.defined())
    scores = scores.view({B, H, nq, nk})
                 .masked_fill(~key_mask.view({key_mask.size(0), 1, 1, key_mask.size(1)}), -INFINITY)
                 .view({B * H, nq, nk});
  return torch::bmm(torch::softmax(scores, -1), v3).view({B, H, nq, d});
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
