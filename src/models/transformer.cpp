#include "dtrainer/models/transformer.h"

#include <cmath>
#include <optional>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/attention.h"
#include "dtrainer/models/embeddings.h"

#include "dit_block.h"
#include "joint_block.h"
#include "mdt_block.h"

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
  if (s.family == TransformerFamily::kMDT) {  // learned, from the sin-cos grid (MDTv2)
    const int64_t g = s.sample_size / p;
    e.learned_pos =
        xe->register_parameter("pos_embed", sincos_pos_embed_2d(h, g, g, 1.0, PosEmbedGrid::kExtrapolate).unsqueeze(0));
  }
  switch (s.family) {
    case TransformerFamily::kDiT:
    case TransformerFamily::kMDT: {
      auto ye = holder("y_embedder");
      if (s.conditioning == "class")
        e.class_table = ye->register_module("embedding_table", nn::Embedding(s.num_classes + 1, h));
      else
        e.pooled_proj = ye->register_module("proj", linear(s.context_dim, h));
      e.modules.push_back(ye);
      break;
    }
    case TransformerFamily::kPixArt:
    case TransformerFamily::kAttDiT: {
      if (s.family == TransformerFamily::kPixArt) {
        e.t_block = register_module("t_block", silu_linear(h, 6 * h, false));
        e.modules.push_back(e.t_block.ptr());
      }
      if (!s.has_caption_mlp() && s.conditioning == "text") break;
      auto ye = holder("y_embedder");
      if (s.conditioning == "class")  // the class embedding: the one token cross-attention reads
        e.class_table = ye->register_module("embedding_table", nn::Embedding(s.num_classes + 1, h));
      if (s.has_caption_mlp()) {
        auto yp = ye->register_module("y_proj", std::make_shared<nn::Module>());
        e.caption_fc1 = yp->register_module("fc1", linear(s.caption_in(), h));
        e.caption_fc2 = yp->register_module("fc2", linear(h, h));
      }
      e.modules.push_back(ye);
      break;
    }
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
  std::vector<std::pair<std::string, std::shared_ptr<MDTBlock>>> mdt;  // (unit name, block), forward order
  std::shared_ptr<SideInterpolater> side;
  if (s.family == TransformerFamily::kMDT) {  // MDTv2: encoder in / out (long skips), side-interpolater, decoder
    const int64_t half = s.mdt_half_depth();
    for (const auto& [name, count, skip] : {std::tuple<const char*, int64_t, bool>{"en_inblocks", half, false},
                                            {"en_outblocks", half, true},
                                            {"de_blocks", s.decode_layer, true}}) {
      nn::ModuleList list;
      for (int64_t i = 0; i < count; ++i)
        list->push_back(
            mdt.emplace_back(std::string(name) + "." + std::to_string(i), std::make_shared<MDTBlock>(s, skip)).second);
      register_module(name, list);
    }
    side = register_module("side_interpolater", std::make_shared<SideInterpolater>(s));
  } else {
    nn::ModuleList list;
    for (int64_t i = 0; i < s.depth; ++i) {
      if (mm)
        list->push_back(joint.emplace_back(std::make_shared<JointBlock>(s, i == s.depth - 1)));
      else
        list->push_back(dit.emplace_back(std::make_shared<DiTBlock>(s)));
    }
    register_module(mm ? "joint_blocks" : "blocks", list);
  }
  auto final_layer = register_module("final_layer", std::make_shared<FinalLayer>(s));
  // The units, in forward order.
  embed_ = Unit<Embed>(this, register_unit("embed", e.modules), embed);
  for (size_t i = 0; i <= mdt.size() && side; ++i) {  // (the side-interpolater between encoder and decoder)
    if (static_cast<int64_t>(i) == 2 * s.mdt_half_depth())
      side_ = Unit<SideInterpolater>(this, register_unit("side_interpolater", {side}), side);
    if (i < mdt.size()) mdt_blocks_.emplace_back(this, register_unit(mdt[i].first, {mdt[i].second}), mdt[i].second);
  }
  const std::string prefix = mm ? "joint_blocks." : "blocks.";
  for (size_t i = 0; i < joint.size(); ++i)
    joint_blocks_.emplace_back(this, register_unit(prefix + std::to_string(i), {joint[i]}), joint[i]);
  for (size_t i = 0; i < dit.size(); ++i)
    dit_blocks_.emplace_back(this, register_unit(prefix + std::to_string(i), {dit[i]}), dit[i]);
  final_ = Unit<FinalLayer>(this, register_unit("final_layer", {final_layer}), final_layer);
}

torch::Tensor DiffusionTransformerImpl::forward(const torch::Tensor& x_t, const torch::Tensor& t,
                                                const torch::Tensor& text, const torch::Tensor& text_mask,
                                                const ControlInputs* controls, const torch::Tensor& labels,
                                                const torch::Tensor& keep) {
  const torch::Tensor out = forward_all(x_t, t, text, text_mask, controls, labels, keep);
  return spec_.learn_sigma ? out.narrow(1, 0, spec_.in_channels) : out;
}

torch::Tensor DiffusionTransformerImpl::forward_all(const torch::Tensor& x_t, const torch::Tensor& t,
                                                    const torch::Tensor& text, const torch::Tensor& text_mask,
                                                    const ControlInputs* controls, const torch::Tensor& labels,
                                                    const torch::Tensor& keep) {
  const TransformerSpec& s = spec_;
  const int64_t p = s.patch_size, h = s.hidden_size;
  if (!x_t.defined() || x_t.dim() != 4 || x_t.size(1) != s.in_channels || x_t.size(2) % p || x_t.size(3) % p)
    throw Error(
        "x_t", "expected [B, " + std::to_string(s.in_channels) + ", H, W] with H, W divisible by " + std::to_string(p));
  const int64_t B = x_t.size(0), gh = x_t.size(2) / p, gw = x_t.size(3) / p, N = gh * gw;
  const bool mdt = s.family == TransformerFamily::kMDT;
  if (mdt && (gh != s.sample_size / p || gw != s.sample_size / p))
    throw Error("x_t", "an MDT's learned positional embeddings and relative position bias are for a " +
                           std::to_string(s.sample_size / p) + " x " + std::to_string(s.sample_size / p) +
                           " token grid, got " + std::to_string(gh) + " x " + std::to_string(gw));
  if (keep.defined() && (!mdt || keep.dim() != 2 || keep.size(0) != B || keep.size(1) > N))
    throw Error("keep", mdt ? "expected [" + std::to_string(B) + ", n <= " + std::to_string(N) + "] token indices"
                            : "only an MDT has a masked forward");
  const bool class_cond = s.conditioning == "class";
  if (class_cond && (!labels.defined() || labels.dim() != 1 || labels.size(0) != B))
    throw Error("labels", "a class-conditional " + std::string(to_string(s.family)) + " needs labels [" +
                              std::to_string(B) + "]");
  const bool uses_text = !class_cond;
  if (uses_text && (!text.defined() || text.dim() != 3 || text.size(0) != B || text.size(2) != s.context_dim))
    throw Error("text", "expected [" + std::to_string(B) + ", T, " + std::to_string(s.context_dim) + "]");
  if (controls && !s.control_conditioning()) throw Error("controls", "this model has no control conditioning");
  const bool class_token =
      class_cond && (s.family == TransformerFamily::kPixArt || s.family == TransformerFamily::kAttDiT);
  const int64_t T = uses_text && s.family != TransformerFamily::kDiT ? text.size(1) : class_token ? 1 : 0;
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
  const auto mask = held(class_cond ? torch::Tensor() : text_mask);
  torch::Tensor x;
  if (mdt) {
    // The encoder sees the kept tokens only; its second half takes the first half's outputs as long
    // skips (last in, first out); the decoder takes the embedded input tokens as its skip.
    const torch::Tensor input = e[0];
    torch::Tensor h =
        keep.defined() ? input.gather(1, keep.unsqueeze(-1).expand({B, keep.size(1), input.size(2)})) : input;
    const size_t half = static_cast<size_t>(s.mdt_half_depth());
    std::vector<torch::Tensor> skips;
    for (size_t i = 0; i < half; ++i) skips.push_back(h = mdt_blocks_[i](h, e[1], held(torch::Tensor()), held(keep)));
    for (size_t i = half; i < 2 * half; ++i) {
      h = mdt_blocks_[i](h, e[1], skips.back(), held(keep));
      skips.pop_back();
    }
    h = side_(h, e[1], held(keep));
    for (size_t i = 2 * half; i < mdt_blocks_.size(); ++i) h = mdt_blocks_[i](h, e[1], input, held(torch::Tensor()));
    x = h;
  } else if (fam == TransformerFamily::kMMDiT || fam == TransformerFamily::kMMDiTPP) {
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
