#pragma once
// The DiT block (adaLN-Zero, Peebles & Xie 2023), the PixArt-alpha block (adaLN-single plus
// cross-attention to the caption, Chen et al. 2023) and [S2]'s Att-DiT block, one module for the
// three (private to src/models).

#include "transformer_blocks.h"

namespace dtrainer::models::transformer_detail {

// DiT (adaLN-Zero), PixArt (adaLN-single + cross-attention) and Att-DiT (adaLN-Zero with a third
// shift / scale / gate for a cross-attention sublayer with RMSNorm on q and k) blocks.
struct DiTBlock : nn::Module {
  std::shared_ptr<Attn> attn;
  std::shared_ptr<CrossAttention> cross_attn;
  std::shared_ptr<Mlp> mlp;
  nn::Sequential adaLN_modulation{nullptr};
  Tensor scale_shift_table;
  int64_t H;
  bool att_dit;
  DiTBlock(const TransformerSpec& s) : H(s.num_heads), att_dit(s.family == TransformerFamily::kAttDiT) {
    const int64_t h = s.hidden_size;
    const bool pixart = s.family == TransformerFamily::kPixArt;
    attn = register_module("attn", std::make_shared<Attn>(h, s.head_dim(), false, true));
    // (a class-conditional Att-DiT's class sublayer reads one token: with one key the attention weight is
    // 1 whatever the query, so its output is the token itself, and it has no projections)
    if (pixart || (att_dit && s.conditioning == "text"))
      cross_attn = register_module("cross_attn", std::make_shared<CrossAttention>(h, H, att_dit));
    mlp = register_module("mlp", std::make_shared<Mlp>(h, s.mlp_ratio * h));
    if (pixart)
      scale_shift_table =
          register_parameter("scale_shift_table", torch::randn({6, h}) / std::sqrt(static_cast<double>(h)));
    else  // adaLN-Zero: 6 modulation vectors (self-attention, MLP), 9 with Att-DiT's cross-attention
      adaLN_modulation = register_module("adaLN_modulation", silu_linear(h, (att_dit ? 9 : 6) * h, /*zero=*/true));
  }
  // DiT: x [B,N,h] with cond = c [B,h] (aux, mask undefined); PixArt: cond = y [B,T,h], aux = t0 [B,6h], the
  // text mask; Att-DiT: cond = c, aux = y, the text mask.
  Tensor forward(const Tensor& x, const Tensor& cond, const Tensor& aux, const Tensor& mask) {
    std::vector<Tensor> mod;
    if (att_dit) {
      mod = adaLN_modulation->forward(cond).chunk(9, -1);  // self (0-2), cross (3-5), MLP (6-8)
      auto [q, k, v] = attn->qkv_heads(modulate(layer_norm(x), mod[0], mod[1]), H);
      Tensor out = x + mod[2].unsqueeze(1) * attn->proj(merge_heads(attention(q, k, v)));
      out = out + mod[5].unsqueeze(1) *
                      (cross_attn ? cross_attn->forward(modulate(layer_norm(out), mod[3], mod[4]), aux, mask) : aux);
      return out + mod[8].unsqueeze(1) * mlp->forward(modulate(layer_norm(out), mod[6], mod[7]));
    }
    if (cross_attn)
      mod = (scale_shift_table.unsqueeze(0) + aux.view({x.size(0), 6, -1})).unbind(1);
    else
      mod = adaLN_modulation->forward(cond).chunk(6, -1);
    auto [q, k, v] = attn->qkv_heads(modulate(layer_norm(x), mod[0], mod[1]), H);
    Tensor out = x + mod[2].unsqueeze(1) * attn->proj(merge_heads(attention(q, k, v)));
    if (cross_attn) out = out + cross_attn->forward(out, cond, mask);
    return out + mod[5].unsqueeze(1) * mlp->forward(modulate(layer_norm(out), mod[3], mod[4]));
  }
};

}  // namespace dtrainer::models::transformer_detail
