#include "dtrainer/models/transformer.h"

#include <cmath>
#include <optional>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/attention.h"
#include "dtrainer/models/embeddings.h"

#include "dit_block.h"
#include "joint_block.h"

namespace dtrainer::models {

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
    case TransformerFamily::kAttDiT:
      if (s.family == TransformerFamily::kPixArt) {
        e.t_block = register_module("t_block", silu_linear(h, 6 * h, false));
        e.modules.push_back(e.t_block.ptr());
      }
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
      if (s.conditioning == "class") {  // class-conditional mmDiT: no text stream, the class into adaLN
        auto ye = holder("y_embedder");
        e.class_table = ye->register_module("embedding_table", nn::Embedding(s.num_classes + 1, h));
        e.modules.push_back(ye);
        break;
      }
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
  const bool class_cond = s.conditioning == "class";
  if (class_cond && (!labels.defined() || labels.dim() != 1 || labels.size(0) != B))
    throw Error("labels", "a class-conditional " + std::string(to_string(s.family)) + " needs labels [" +
                              std::to_string(B) + "]");
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
  } else if (fam == TransformerFamily::kAttDiT) {
    x = e[0];
    for (const auto& block : dit_blocks_) x = block(x, e[2], e[1], mask);
  } else {
    x = e[0];
    for (const auto& block : dit_blocks_) x = block(x, e[1], held(torch::Tensor()), held(torch::Tensor()));
  }
  const torch::Tensor tokens =
      final_(x, fam == TransformerFamily::kPixArt || fam == TransformerFamily::kAttDiT ? e[2] : e[1]);
  const int64_t out_c = s.out_channels();
  // Unpatchify: [B, gh * gw, p * p * out] -> [B, out, gh * p, gw * p]
  return tokens.view({B, gh, gw, p, p, out_c}).permute({0, 5, 1, 3, 2, 4}).reshape({B, out_c, gh * p, gw * p});
}

}  // namespace dtrainer::models
