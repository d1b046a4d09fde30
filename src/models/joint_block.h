#pragma once
// The mmDiT joint block (SD3, Esser et al. 2024; [S2]'s mmDiT++ uses it too): two streams, text and
// image, each with its own adaLN, projections and MLP, attending jointly (private to src/models).

#include "transformer_blocks.h"

namespace dtrainer::models::transformer_detail {

// One stream of an mmDiT joint block: its own adaLN, qkv (+ RMSNorm on q, k), proj and MLP; a
// text stream with shared weights (context_stream = shared) has the qkv and norms only.
struct Stream : nn::Module {
  nn::Sequential adaLN_modulation{nullptr};
  std::shared_ptr<Attn> attn;
  std::shared_ptr<Mlp> mlp;
  bool pre_only, shared;
  Stream(const TransformerSpec& s, bool pre_only_, bool shared_) : pre_only(pre_only_), shared(shared_) {
    const int64_t h = s.hidden_size;
    if (!shared) adaLN_modulation = register_module("adaLN_modulation", silu_linear(h, (pre_only ? 2 : 6) * h, true));
    attn = register_module("attn", std::make_shared<Attn>(h, s.head_dim(), true, !pre_only && !shared));
    if (!pre_only && !shared) mlp = register_module("mlp", std::make_shared<Mlp>(h, s.mlp_ratio * h));
  }
};

struct JointBlock : nn::Module {
  std::shared_ptr<Stream> context_block, x_block;  // (no context_block: class-conditional, image tokens only)
  int64_t H;
  JointBlock(const TransformerSpec& s, bool last) : H(s.num_heads) {
    if (s.conditioning == "text")
      context_block = register_module("context_block", std::make_shared<Stream>(s, last, s.context_stream == "shared"));
    x_block = register_module("x_block", std::make_shared<Stream>(s, false, false));
  }
  // seq = [ctx; x] [B, T+N, h] (the T text tokens first), c [B, h], mask [B, T] (optional)
  // -> [ctx'; x'] (ctx passes through in the last block). A shared text stream is modulated, projected
  // and transformed by the image stream's weights.
  Tensor forward(const Tensor& seq, const Tensor& c, const Tensor& mask, int64_t T) {
    const Tensor ctx = seq.narrow(1, 0, T), x = seq.narrow(1, T, seq.size(1) - T);
    const auto mx = x_block->adaLN_modulation->forward(c).chunk(6, -1);
    auto [qx, kx, vx] = x_block->attn->qkv_heads(modulate(layer_norm(x), mx[0], mx[1]), H);
    if (!context_block) {  // image tokens alone
      Tensor xo = x + mx[2].unsqueeze(1) * x_block->attn->proj(merge_heads(attention(qx, kx, vx)));
      return xo + mx[5].unsqueeze(1) * x_block->mlp->forward(modulate(layer_norm(xo), mx[3], mx[4]));
    }
    Stream& cs = context_block->shared ? *x_block : *context_block;  // (whose adaLN, proj and MLP the text uses)
    const bool pre_only = context_block->pre_only;
    const auto mc = context_block->shared ? mx : cs.adaLN_modulation->forward(c).chunk(pre_only ? 2 : 6, -1);
    auto [qc, kc, vc] = context_block->attn->qkv_heads(modulate(layer_norm(ctx), mc[0], mc[1]), H);
    // Joint attention over the concatenated sequence (text first); padded text keys are masked.
    Tensor key_mask;
    if (mask.defined()) key_mask = torch::cat({mask, torch::ones({x.size(0), x.size(1)}, mask.options())}, 1);
    const Tensor joint =
        merge_heads(attention(torch::cat({qc, qx}, 2), torch::cat({kc, kx}, 2), torch::cat({vc, vx}, 2), key_mask));
    const Tensor ax = joint.narrow(1, T, x.size(1)), ac = joint.narrow(1, 0, T);
    Tensor xo = x + mx[2].unsqueeze(1) * x_block->attn->proj(ax);
    xo = xo + mx[5].unsqueeze(1) * x_block->mlp->forward(modulate(layer_norm(xo), mx[3], mx[4]));
    Tensor co = ctx;
    if (!pre_only) {
      co = ctx + mc[2].unsqueeze(1) * cs.attn->proj(ac);
      co = co + mc[5].unsqueeze(1) * cs.mlp->forward(modulate(layer_norm(co), mc[3], mc[4]));
    }
    return torch::cat({co, xo}, 1);
  }
};

}  // namespace dtrainer::models::transformer_detail
