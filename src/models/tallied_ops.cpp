#include "tallied_ops.h"

#include <torch/torch.h>

#include "dtrainer/models/attention.h"
#include "dtrainer/models/op_tally.h"

namespace dtrainer::models::ops {

torch::Tensor linear(torch::nn::Linear& layer, const torch::Tensor& x) {
  torch::Tensor y = layer->forward(x);
  if (tally_detail::active()) {
    const int64_t in = layer->weight.size(1), out = layer->weight.size(0);
    tally_detail::add(x.numel() / in * in * out, 0, y.numel());
  }
  return y;
}

torch::Tensor conv(torch::nn::Conv2d& layer, const torch::Tensor& x) {
  torch::Tensor y = layer->forward(x);
  if (tally_detail::active()) {
    const auto& w = layer->weight;  // [out, in/groups, kh, kw]
    tally_detail::add(y.numel() * w.size(1) * w.size(2) * w.size(3), 0, y.numel());
  }
  return y;
}

torch::Tensor norm(torch::nn::GroupNorm& layer, const torch::Tensor& x) {
  torch::Tensor y = layer->forward(x);
  tally_detail::add(0, 0, y.numel());
  return y;
}

torch::Tensor norm(torch::nn::LayerNorm& layer, const torch::Tensor& x) {
  torch::Tensor y = layer->forward(x);
  tally_detail::add(0, 0, y.numel());
  return y;
}

torch::Tensor masked_group_norm(torch::nn::GroupNorm& layer, const torch::Tensor& x, const torch::Tensor& mask) {
  if (!mask.defined()) return norm(layer, x);
  const int64_t B = x.size(0), C = x.size(1), T = x.size(2), G = layer->options.num_groups();
  const torch::Tensor xg = x.reshape({B, G, C / G, T});
  const torch::Tensor m = mask.to(x.dtype()).view({B, 1, 1, T});
  const torch::Tensor count = m.sum({2, 3}, /*keepdim=*/true) * (C / G);
  const torch::Tensor mean = (xg * m).sum({2, 3}, true) / count;
  const torch::Tensor var = ((xg - mean).pow(2) * m).sum({2, 3}, true) / count;  // biased, as GroupNorm
  torch::Tensor y = ((xg - mean) / torch::sqrt(var + layer->options.eps())).reshape({B, C, T});
  if (layer->options.affine()) y = y * layer->weight.view({1, C, 1}) + layer->bias.view({1, C, 1});
  tally_detail::add(0, 0, y.numel());
  return y;
}

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                        const torch::Tensor& key_mask) {
  const int64_t B = q.size(0), nq = q.size(1), nk = k.size(1), inner = q.size(2), d = inner / heads;
  auto split = [&](const torch::Tensor& t, int64_t n) { return t.reshape({B, n, heads, d}).transpose(1, 2); };
  // Fused scaled-dot-product attention where LibTorch has it (FlashAttention on a GPU when there is
  // no mask), else the explicit softmax(QK^T / sqrt(d)) V.
  const torch::Tensor out = models::attention(split(q, nq), split(k, nk), split(v, nk), key_mask);  // [B, heads, nq, d]
  tally_detail::add(0, 2 * B * heads * nq * nk * d, B * heads * nq * nk);
  return out.transpose(1, 2).reshape({B, nq, inner});
}

}  // namespace dtrainer::models::ops
