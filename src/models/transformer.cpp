#include "dtrainer/models/transformer.h"

#include <array>
#include <cmath>
#include <optional>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/attention.h"
#include "dtrainer/models/embeddings.h"

namespace dtrainer::models {
namespace transformer_detail {

namespace nn = torch::nn;
using torch::Tensor;

Tensor layer_norm(const Tensor& x) { return torch::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6); }  // no affine
Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}
// [B, N, h] -> [B, H, N, h / H]
Tensor heads(const Tensor& x, int64_t H) { return x.view({x.size(0), x.size(1), H, -1}).transpose(1, 2); }
Tensor merge_heads(const Tensor& x) { return x.transpose(1, 2).reshape({x.size(0), x.size(2), -1}); }
// Masked mean of text tokens: the pooled text vector.
Tensor pooled(const Tensor& text, const Tensor& mask) {
  if (!mask.defined()) return text.mean(1);
  const Tensor w = mask.to(text.dtype()).unsqueeze(-1);
  return (text * w).sum(1) / w.sum(1).clamp_min(1);
}

nn::Linear linear(int64_t in, int64_t out) { return nn::Linear(nn::LinearOptions(in, out)); }

// SiLU -> Linear, registered as "adaLN_modulation" / "t_block" (the Linear is child "1").
nn::Sequential silu_linear(int64_t in, int64_t out, bool zero) {
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

struct CrossAttention : nn::Module {
  nn::Linear q_linear{nullptr}, kv_linear{nullptr}, proj{nullptr};
  int64_t H;
  CrossAttention(int64_t h, int64_t H_) : H(H_) {
    q_linear = register_module("q_linear", linear(h, h));
    kv_linear = register_module("kv_linear", linear(h, 2 * h));
    proj = register_module("proj", linear(h, h));
    torch::NoGradGuard g;  // PixArt: the cross-attention output starts at zero
    proj->weight.zero_();
    proj->bias.zero_();
  }
  Tensor forward(const Tensor& x, const Tensor& y, const Tensor& mask) {
    const Tensor q = heads(q_linear(x), H);
    auto kv = kv_linear(y).chunk(2, -1);
    return proj(merge_heads(attention(q, heads(kv[0], H), heads(kv[1], H), mask)));
  }
};

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

// One block of DiT / PixArt, or one joint block of mmDiT (two streams).
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

// One stream of an mmDiT joint block: its own adaLN, qkv (+ RMSNorm on q, k), proj and MLP.
struct Stream : nn::Module {
  nn::Sequential adaLN_modulation{nullptr};
  std::shared_ptr<Attn> attn;
  std::shared_ptr<Mlp> mlp;
  bool pre_only;
  Stream(const TransformerSpec& s, bool pre_only_) : pre_only(pre_only_) {
    const int64_t h = s.hidden_size;
    adaLN_modulation = register_module("adaLN_modulation", silu_linear(h, (pre_only ? 2 : 6) * h, true));
    attn = register_module("attn", std::make_shared<Attn>(h, s.head_dim(), true, !pre_only));
    if (!pre_only) mlp = register_module("mlp", std::make_shared<Mlp>(h, s.mlp_ratio * h));
  }
};

struct JointBlock : nn::Module {
  std::shared_ptr<Stream> context_block, x_block;
  int64_t H;
  JointBlock(const TransformerSpec& s, bool last) : H(s.num_heads) {
    context_block = register_module("context_block", std::make_shared<Stream>(s, last));
    x_block = register_module("x_block", std::make_shared<Stream>(s, false));
  }
  // seq = [ctx; x] [B, T+N, h] (the T text tokens first), c [B, h], mask [B, T] (optional)
  // -> [ctx'; x'] (ctx passes through in the last block).
  Tensor forward(const Tensor& seq, const Tensor& c, const Tensor& mask, int64_t T) {
    const Tensor ctx = seq.narrow(1, 0, T), x = seq.narrow(1, T, seq.size(1) - T);
    const auto mc = context_block->adaLN_modulation->forward(c).chunk(context_block->pre_only ? 2 : 6, -1);
    const auto mx = x_block->adaLN_modulation->forward(c).chunk(6, -1);
    auto [qc, kc, vc] = context_block->attn->qkv_heads(modulate(layer_norm(ctx), mc[0], mc[1]), H);
    auto [qx, kx, vx] = x_block->attn->qkv_heads(modulate(layer_norm(x), mx[0], mx[1]), H);
    // Joint attention over the concatenated sequence (text first); padded text keys are masked.
    Tensor key_mask;
    if (mask.defined()) key_mask = torch::cat({mask, torch::ones({x.size(0), x.size(1)}, mask.options())}, 1);
    const Tensor joint =
        merge_heads(attention(torch::cat({qc, qx}, 2), torch::cat({kc, kx}, 2), torch::cat({vc, vx}, 2), key_mask));
    const Tensor ax = joint.narrow(1, T, x.size(1)), ac = joint.narrow(1, 0, T);
    Tensor xo = x + mx[2].unsqueeze(1) * x_block->attn->proj(ax);
    xo = xo + mx[5].unsqueeze(1) * x_block->mlp->forward(modulate(layer_norm(xo), mx[3], mx[4]));
    Tensor co = ctx;
    if (!context_block->pre_only) {
      co = ctx + mc[2].unsqueeze(1) * context_block->attn->proj(ac);
      co = co + mc[5].unsqueeze(1) * context_block->mlp->forward(modulate(layer_norm(co), mc[3], mc[4]));
    }
    return torch::cat({co, xo}, 1);
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
  std::vector<std::shared_ptr<nn::Module>> modules;  // every one above that exists (the "embed" unit)
  TransformerFamily family = TransformerFamily::kDiT;
  int64_t frequency_dim = 256, hidden = 0;

  // The tokens and the conditioning vector c [B, h] the blocks take, from x_t [B, C, H, W], t [B]
  // and text [B, T, context_dim] (labels for a class-conditional DiT; pos: the grid's positions):
  //   DiT {x [B, N, h], c};  PixArt {x, y [B, T, h], c, t0 [B, 6h]};  mmDiT(++) {[ctx; x] [B, T + N, h], c}.
  std::vector<Tensor> forward(const Tensor& x_t, const Tensor& t, const Tensor& text, const Tensor& labels,
                              const Tensor& mask, const Tensor& pos, const std::optional<ControlInputs>& controls) {
    const Tensor x = x_embedder(x_t).flatten(2).transpose(1, 2) + pos.unsqueeze(0);
    Tensor c = t_mlp->forward(timestep_features(t, frequency_dim).to(x.dtype()));
    switch (family) {
      case TransformerFamily::kDiT:
        return {x, c + (class_table ? class_table(labels) : pooled_proj(pooled(text, mask)))};
      case TransformerFamily::kPixArt: {
        const Tensor y = caption_fc1 ? caption_fc2(torch::gelu(caption_fc1(text), "tanh")) : text;
        const Tensor t0 = t_block->forward(c);  // [B, 6h]
        return {x, y, c, t0};
      }
      default: {
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

}  // namespace transformer_detail

using namespace transformer_detail;
namespace nn = torch::nn;

DiffusionTransformerImpl::DiffusionTransformerImpl(const TransformerSpec& s) : spec_(s) {
  s.validate();
  const int64_t h = s.hidden_size, p = s.patch_size;
  auto embed = std::make_shared<Embed>();
  Embed& e = *embed;
  e.family = s.family;
  e.frequency_dim = s.frequency_dim;
  e.hidden = h;
  auto holder = [&](const std::string& name) { return register_module(name, std::make_shared<nn::Module>()); };
  auto xe = holder("x_embedder");
  e.x_embedder = xe->register_module("proj", nn::Conv2d(nn::Conv2dOptions(s.in_channels, h, p).stride(p)));
  auto te = holder("t_embedder");
  e.t_mlp = te->register_module("mlp", nn::Sequential(linear(s.frequency_dim, h), nn::SiLU(), linear(h, h)));
  e.modules = {xe, te};
  switch (s.family) {
    case TransformerFamily::kDiT: {
      auto ye = holder("y_embedder");
      if (s.conditioning == "class")
        e.class_table = ye->register_module("embedding_table", nn::Embedding(s.num_classes + 1, h));
      else
        e.pooled_proj = ye->register_module("proj", linear(s.context_dim, h));
      e.modules.push_back(ye);
      break;
    }
    case TransformerFamily::kPixArt:
      e.t_block = register_module("t_block", silu_linear(h, 6 * h, false));
      e.modules.push_back(e.t_block.ptr());
      if (s.has_caption_mlp()) {
        auto ye = holder("y_embedder");
        auto yp = ye->register_module("y_proj", std::make_shared<nn::Module>());
        e.caption_fc1 = yp->register_module("fc1", linear(s.context_dim, h));
        e.caption_fc2 = yp->register_module("fc2", linear(h, h));
        e.modules.push_back(ye);
      }
      break;
    case TransformerFamily::kMMDiT:
    case TransformerFamily::kMMDiTPP:
      e.context_embedder = register_module("context_embedder", linear(s.context_dim, h));
      e.modules.push_back(e.context_embedder.ptr());
      if (s.family == TransformerFamily::kMMDiT) {
        auto ye = holder("y_embedder");
        e.y_mlp = ye->register_module("mlp", nn::Sequential(linear(s.context_dim, h), nn::SiLU(), linear(h, h)));
        e.modules.push_back(ye);
      } else {
        e.control = register_module("control_embedding", ControlEmbedding(s.control_feature_dim, h));
        e.modules.push_back(e.control.ptr());
      }
      break;
  }
  const bool mm = s.family == TransformerFamily::kMMDiT || s.family == TransformerFamily::kMMDiTPP;
  std::vector<std::shared_ptr<JointBlock>> joint;
  std::vector<std::shared_ptr<DiTBlock>> dit;
  nn::ModuleList list;
  for (int64_t i = 0; i < s.depth; ++i) {
    if (mm)
      list->push_back(joint.emplace_back(std::make_shared<JointBlock>(s, i == s.depth - 1)));
    else
      list->push_back(dit.emplace_back(std::make_shared<DiTBlock>(s)));
  }
  register_module(mm ? "joint_blocks" : "blocks", list);
  auto final_layer = register_module("final_layer", std::make_shared<FinalLayer>(s));
  // The units, in forward order.
  embed_ = Unit<Embed>(this, register_unit("embed", e.modules), embed);
  const std::string prefix = mm ? "joint_blocks." : "blocks.";
  for (size_t i = 0; i < joint.size(); ++i)
    joint_blocks_.emplace_back(this, register_unit(prefix + std::to_string(i), {joint[i]}), joint[i]);
  for (size_t i = 0; i < dit.size(); ++i)
    dit_blocks_.emplace_back(this, register_unit(prefix + std::to_string(i), {dit[i]}), dit[i]);
  final_ = Unit<FinalLayer>(this, register_unit("final_layer", {final_layer}), final_layer);
}

torch::Tensor DiffusionTransformerImpl::forward(const torch::Tensor& x_t, const torch::Tensor& t,
                                                const torch::Tensor& text, const torch::Tensor& text_mask,
                                                const ControlInputs* controls, const torch::Tensor& labels) {
  const torch::Tensor out = forward_all(x_t, t, text, text_mask, controls, labels);
  return spec_.learn_sigma ? out.narrow(1, 0, spec_.in_channels) : out;
}

torch::Tensor DiffusionTransformerImpl::forward_all(const torch::Tensor& x_t, const torch::Tensor& t,
                                                    const torch::Tensor& text, const torch::Tensor& text_mask,
                                                    const ControlInputs* controls, const torch::Tensor& labels) {
  const TransformerSpec& s = spec_;
  const int64_t p = s.patch_size, h = s.hidden_size;
  if (!x_t.defined() || x_t.dim() != 4 || x_t.size(1) != s.in_channels || x_t.size(2) % p || x_t.size(3) % p)
    throw Error(
        "x_t", "expected [B, " + std::to_string(s.in_channels) + ", H, W] with H, W divisible by " + std::to_string(p));
  const int64_t B = x_t.size(0), gh = x_t.size(2) / p, gw = x_t.size(3) / p, N = gh * gw;
  const bool class_cond = s.family == TransformerFamily::kDiT && s.conditioning == "class";
  if (class_cond && (!labels.defined() || labels.dim() != 1 || labels.size(0) != B))
    throw Error("labels", "a class-conditional DiT needs labels [" + std::to_string(B) + "]");
  const bool uses_text = !class_cond;
  if (uses_text && (!text.defined() || text.dim() != 3 || text.size(0) != B || text.size(2) != s.context_dim))
    throw Error("text", "expected [" + std::to_string(B) + ", T, " + std::to_string(s.context_dim) + "]");
  if (controls && !s.control_conditioning()) throw Error("controls", "this model has no control conditioning");
  const int64_t T = uses_text && s.family != TransformerFamily::kDiT ? text.size(1) : 0;
  // Positional embedding of this grid: the training grid at pos_embed_scale, or resampled /
  // extrapolated for another resolution ([S2]).
  const double scale = s.pos_embed_scale * static_cast<double>(gh) / static_cast<double>(s.sample_size / p);
  // (computed once per grid size, dtype and device, not every step: a host-to-GPU copy per step
  // would make each step wait for the host)
  if (!pos_cache_.defined() || pos_cache_.size(0) != N || pos_grid_ != std::make_pair(gh, gw) ||
      pos_cache_.dtype() != x_t.dtype() || pos_cache_.device() != x_t.device())
    pos_cache_ = sincos_pos_embed_2d(h, gh, gw, scale, parse_pos_embed_grid("model.pos_embed_grid", s.pos_embed_grid))
                     .to(x_t.device(), x_t.dtype());
  pos_grid_ = {gh, gw};
  const torch::Tensor pos = pos_cache_;

  const TransformerFamily fam = s.family;
  const std::optional<ControlInputs> ctl = controls ? std::optional<ControlInputs>(*controls) : std::nullopt;
  // (text is an input of the embedding unit only where the model reads it)
  const torch::Tensor text_in = uses_text ? text : torch::empty({B, 0, s.context_dim}, x_t.options());
  const std::vector<torch::Tensor> e =
      embed_(x_t, t.to(torch::kFloat32), text_in, held(labels), held(text_mask), held(pos), held(ctl));
  const auto mask = held(text_mask);
  torch::Tensor x;
  if (fam == TransformerFamily::kMMDiT || fam == TransformerFamily::kMMDiTPP) {
    torch::Tensor seq = e[0];
    for (const auto& block : joint_blocks_) seq = block(seq, e[1], mask, T);
    x = seq.narrow(1, T, N);
  } else if (fam == TransformerFamily::kPixArt) {
    x = e[0];
    for (const auto& block : dit_blocks_) x = block(x, e[1], e[3], mask);
  } else {
    x = e[0];
    for (const auto& block : dit_blocks_) x = block(x, e[1], held(torch::Tensor()), held(torch::Tensor()));
  }
  const torch::Tensor tokens = final_(x, fam == TransformerFamily::kPixArt ? e[2] : e[1]);
  const int64_t out_c = s.out_channels();
  // Unpatchify: [B, gh * gw, p * p * out] -> [B, out, gh * p, gw * p]
  return tokens.view({B, gh, gw, p, p, out_c}).permute({0, 5, 1, 3, 2, 4}).reshape({B, out_c, gh * p, gw * p});
}

}  // namespace dtrainer::models
