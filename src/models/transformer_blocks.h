#pragma once
// What the transformer families share (private to src/models): adaLN helpers, attention and MLP
// modules, the final layer and the embedding unit. Each family's block has its file:
// dit_block.h (DiT, PixArt-alpha), joint_block.h (mmDiT, mmDiT++). Parameter names follow the
// reference implementations (DiT, PixArt, SD3).

#include <cmath>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "dtrainer/models/attention.h"
#include "dtrainer/models/control_embedding.h"
#include "dtrainer/models/embeddings.h"
#include "dtrainer/models/transformer_spec.h"

namespace dtrainer::models::transformer_detail {

namespace nn = torch::nn;
using torch::Tensor;

inline Tensor layer_norm(const Tensor& x) { return torch::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6); }  // no affine
inline Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}
// [B, N, h] -> [B, H, N, h / H]
inline Tensor heads(const Tensor& x, int64_t H) { return x.view({x.size(0), x.size(1), H, -1}).transpose(1, 2); }
inline Tensor merge_heads(const Tensor& x) { return x.transpose(1, 2).reshape({x.size(0), x.size(2), -1}); }
// Masked mean of text tokens: the pooled text vector.
inline Tensor pooled(const Tensor& text, const Tensor& mask) {
  if (!mask.defined()) return text.mean(1);
  const Tensor w = mask.to(text.dtype()).unsqueeze(-1);
  return (text * w).sum(1) / w.sum(1).clamp_min(1);
}

inline nn::Linear linear(int64_t in, int64_t out) { return nn::Linear(nn::LinearOptions(in, out)); }

// SiLU -> Linear, registered as "adaLN_modulation" / "t_block" (the Linear is child "1").
inline nn::Sequential silu_linear(int64_t in, int64_t out, bool zero) {
  nn::Sequential s(nn::SiLU(), linear(in, out));
  if (zero) {
    torch::NoGradGuard g;
    auto* l = s[1]->as<nn::Linear>();
    l->weight.zero_();
    l->bias.zero_();
  }
  return s;
}

struct Mlp : nn::Module {
  nn::Linear fc1{nullptr}, fc2{nullptr};
  Mlp(int64_t h, int64_t hidden) {
    fc1 = register_module("fc1", linear(h, hidden));
    fc2 = register_module("fc2", linear(hidden, h));
  }
  Tensor forward(const Tensor& x) { return fc2(torch::gelu(fc1(x), "tanh")); }
};

struct RMSNorm : nn::Module {
  Tensor weight;
  explicit RMSNorm(int64_t d) { weight = register_parameter("weight", torch::ones({d})); }
  Tensor forward(const Tensor& x) { return x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * weight; }
};

// Cross-attention of the image tokens to the text tokens. PixArt: the output projection starts at
// zero (the block starts as self-attention + MLP). Att-DiT: RMSNorm on q and k, and the projection
// keeps its initialisation (an adaLN gate, zero at first, scales it instead).
struct CrossAttention : nn::Module {
  nn::Linear q_linear{nullptr}, kv_linear{nullptr}, proj{nullptr};
  std::shared_ptr<RMSNorm> ln_q, ln_k;
  int64_t H;
  CrossAttention(int64_t h, int64_t H_, bool qk_norm = false);
  Tensor forward(const Tensor& x, const Tensor& y, const Tensor& mask);
};

inline CrossAttention::CrossAttention(int64_t h, int64_t H_, bool qk_norm) : H(H_) {
  q_linear = register_module("q_linear", linear(h, h));
  kv_linear = register_module("kv_linear", linear(h, 2 * h));
  proj = register_module("proj", linear(h, h));
  if (qk_norm) {
    ln_q = register_module("ln_q", std::make_shared<RMSNorm>(h / H));
    ln_k = register_module("ln_k", std::make_shared<RMSNorm>(h / H));
    return;
  }
  torch::NoGradGuard g;  // PixArt: the cross-attention output starts at zero
  proj->weight.zero_();
  proj->bias.zero_();
}
inline Tensor CrossAttention::forward(const Tensor& x, const Tensor& y, const Tensor& mask) {
  Tensor q = heads(q_linear(x), H);
  auto kv = kv_linear(y).chunk(2, -1);
  Tensor k = heads(kv[0], H);
  if (ln_q) {
    q = ln_q->forward(q);
    k = ln_k->forward(k);
  }
  return proj(merge_heads(attention(q, k, heads(kv[1], H), mask)));
}

struct Attn : nn::Module {
  nn::Linear qkv{nullptr}, proj{nullptr};
  std::shared_ptr<RMSNorm> ln_q, ln_k;
  Attn(int64_t h, int64_t head_dim, bool qk_norm, bool with_proj) {
    qkv = register_module("qkv", linear(h, 3 * h));
    if (qk_norm) {
      ln_q = register_module("ln_q", std::make_shared<RMSNorm>(head_dim));
      ln_k = register_module("ln_k", std::make_shared<RMSNorm>(head_dim));
    }
    if (with_proj) proj = register_module("proj", linear(h, h));
  }
  // q, k, v as [B, H, N, d] (normalised when qk_norm)
  std::array<Tensor, 3> qkv_heads(const Tensor& x, int64_t H) {
    auto parts = qkv(x).chunk(3, -1);
    Tensor q = heads(parts[0], H), k = heads(parts[1], H), v = heads(parts[2], H);
    if (ln_q) {
      q = ln_q->forward(q);
      k = ln_k->forward(k);
    }
    return {q, k, v};
  }
};

struct FinalLayer : nn::Module {
  nn::Linear linear_{nullptr};
  nn::Sequential adaLN_modulation{nullptr};
  Tensor scale_shift_table;
  FinalLayer(const TransformerSpec& s) {
    const int64_t h = s.hidden_size;
    linear_ = register_module("linear", linear(h, s.patch_size * s.patch_size * s.out_channels()));
    {
      torch::NoGradGuard g;  // DiT: the output starts at zero
      linear_->weight.zero_();
      linear_->bias.zero_();
    }
    if (s.family == TransformerFamily::kPixArt)
      scale_shift_table =
          register_parameter("scale_shift_table", torch::randn({2, h}) / std::sqrt(static_cast<double>(h)));
    else
      adaLN_modulation = register_module("adaLN_modulation", silu_linear(h, 2 * h, true));
  }
  Tensor forward(const Tensor& x, const Tensor& c) {
    std::vector<Tensor> m = scale_shift_table.defined() ? (scale_shift_table.unsqueeze(0) + c.unsqueeze(1)).unbind(1)
                                                        : adaLN_modulation->forward(c).chunk(2, -1);
    return linear_(modulate(layer_norm(x), m[0], m[1]));
  }
};

// The embedding modules (registered on the model itself under their reference names).
struct Embed {
  nn::Conv2d x_embedder{nullptr};
  nn::Sequential t_mlp{nullptr};
  nn::Embedding class_table{nullptr};
  nn::Linear pooled_proj{nullptr}, caption_fc1{nullptr}, caption_fc2{nullptr}, context_embedder{nullptr};
  nn::Sequential y_mlp{nullptr}, t_block{nullptr};
  ControlEmbedding control{nullptr};
  Tensor learned_pos;  // MDT: the encoder's learned positional embedding [1, N, h] (sin-cos at first)
  std::vector<std::shared_ptr<nn::Module>> modules;  // every one above that exists (the "embed" unit)
  TransformerFamily family = TransformerFamily::kDiT;
  int64_t frequency_dim = 256, hidden = 0;

  // The tokens and the conditioning vector c [B, h] the blocks take, from x_t [B, C, H, W], t [B]
  // and text [B, T, context_dim] (labels for a class-conditional DiT; pos: the grid's positions):
  //   DiT {x [B, N, h], c};  PixArt {x, y [B, T, h], c, t0 [B, 6h]};  Att-DiT {x, y, c};
  //   mmDiT(++) {[ctx; x] [B, T + N, h], c}.
  std::vector<Tensor> forward(const Tensor& x_t, const Tensor& t, const Tensor& text, const Tensor& labels,
                              const Tensor& mask, const Tensor& pos, const std::optional<ControlInputs>& controls) {
    const Tensor x =
        x_embedder(x_t).flatten(2).transpose(1, 2) + (learned_pos.defined() ? learned_pos : pos.unsqueeze(0));
    Tensor c = t_mlp->forward(timestep_features(t, frequency_dim).to(x.dtype()));
    switch (family) {
      case TransformerFamily::kDiT:
      case TransformerFamily::kMDT:
        return {x, c + (class_table ? class_table(labels) : pooled_proj(pooled(text, mask)))};
      case TransformerFamily::kAttDiT: {  // text only through cross-attention: c is the timestep's
        if (class_table) {  // class-conditional: the class in adaLN, and as the one token of the class sublayer
          const Tensor e_y = class_table(labels);
          return {x, e_y.unsqueeze(1), c + e_y};
        }
        const Tensor y = caption_fc1 ? caption_fc2(torch::gelu(caption_fc1(text), "tanh")) : text;
        return {x, y, c};
      }
      case TransformerFamily::kPixArt: {
        const Tensor in = class_table ? class_table(labels).unsqueeze(1) : text;  // (class: one token)
        const Tensor y = caption_fc1 ? caption_fc2(torch::gelu(caption_fc1(in), "tanh")) : in;
        const Tensor t0 = t_block->forward(c);  // [B, 6h]
        return {x, y, c, t0};
      }
      default: {
        if (class_table) return {x, c + class_table(labels)};  // (class-conditional mmDiT: image tokens only)
        const Tensor ctx = context_embedder(text);
        if (family == TransformerFamily::kMMDiT)
          c = c + y_mlp->forward(pooled(text, mask));
        else if (controls)
          c = c + control->forward(*controls);  // [S2]: c_emb joins the timestep embedding
        return {torch::cat({ctx, x}, 1), c};
      }
    }
  }
};

}  // namespace dtrainer::models::transformer_detail
