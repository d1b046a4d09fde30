#pragma once
// The DiT block (adaLN-Zero, Peebles & Xie 2023) and the PixArt-alpha block (adaLN-single plus
// cross-attention to the caption, Chen et al. 2023), one module for both (private to src/models).

#include "transformer_blocks.h"

namespace dtrainer::models::transformer_detail {

// DiT (adaLN-Zero) and PixArt (adaLN-single + cross-attention) blocks.
struct DiTBlock : nn::Module {
  std::shared_ptr<Attn> attn;
  std::shared_ptr<CrossAttention> cross_attn;
  std::shared_ptr<Mlp> mlp;
  nn::Sequential adaLN_modulation{nullptr};
  Tensor scale_shift_table;
  int64_t H;
  DiTBlock(const TransformerSpec& s) : H(s.num_heads) {
    const int64_t h = s.hidden_size;
    const bool pixart = s.family == TransformerFamily::kPixArt;
    attn = register_module("attn", std::make_shared<Attn>(h, s.head_dim(), false, true));
    if (pixart) cross_attn = register_module("cross_attn", std::make_shared<CrossAttention>(h, H));
    mlp = register_module("mlp", std::make_shared<Mlp>(h, s.mlp_ratio * h));
    if (pixart)
      scale_shift_table =
          register_parameter("scale_shift_table", torch::randn({6, h}) / std::sqrt(static_cast<double>(h)));
    else
      adaLN_modulation = register_module("adaLN_modulation", silu_linear(h, 6 * h, /*zero=*/true));  // adaLN-Zero
  }
  // DiT: x [B,N,h] with cond = c [B,h] (t0, mask undefined); PixArt: cond = y [B,T,h], t0 [B,6h], the text mask.
  Tensor forward(const Tensor& x, const Tensor& cond, const Tensor& t0, const Tensor& mask) {
    std::vector<Tensor> mod;
    if (cross_attn)
      mod = (scale_shift_table.unsqueeze(0) + t0.view({x.size(0), 6, -1})).unbind(1);
    else
      mod = adaLN_modulation->forward(cond).chunk(6, -1);
    auto [q, k, v] = attn->qkv_heads(modulate(layer_norm(x), mod[0], mod[1]), H);
    Tensor out = x + mod[2].unsqueeze(1) * attn->proj(merge_heads(attention(q, k, v)));
    if (cross_attn) out = out + cross_attn->forward(out, cond, mask);
    return out + mod[5].unsqueeze(1) * mlp->forward(modulate(layer_norm(out), mod[3], mod[4]));
  }
};

}  // namespace dtrainer::models::transformer_detail
