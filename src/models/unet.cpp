#include "dtrainer/models/unet.h"

#include <optional>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/unet_plan.h"
#include "tallied_ops.h"
#include "unet_blocks.h"

namespace dtrainer::models {

using namespace unet_detail;

UNetImpl::UNetImpl(const UNetSpec& spec) : spec_(spec) {
  const UNetPlan plan = plan_unet(spec);  // validates
  const Act act = spec.layout == UNetLayout::kDeepFloydIF ? Act::kGELU : Act::kSiLU;
  const int64_t C = spec.model_channels;
  conv_in_ = register_module("conv_in", torch::nn::Conv2d(torch::nn::Conv2dOptions(spec.in_channels, C, 3).padding(1)));
  time_embedding_ =
      register_module("time_embedding", std::make_shared<TimestepEmbedding>(C, spec.time_embed_dim(), act));
  if (spec.control_conditioning)
    control_embedding_ =
        register_module("control_embedding", ControlEmbedding(spec.control_feature_dim, spec.time_embed_dim()));
  torch::nn::Embedding class_table{nullptr};
  if (spec.num_classes > 0) {
    class_embedder_ = register_module("class_embedder", std::make_shared<torch::nn::Module>());
    class_table = class_embedder_->register_module("embedding_table",
                                                   torch::nn::Embedding(spec.num_classes + 1, spec.context_dim));
  }
  torch::nn::ModuleList down, up;
  for (const auto& st : plan.down) {
    down_.push_back(std::make_shared<Stage>(st, spec));
    down->push_back(down_.back());
  }
  register_module("down_blocks", down);
  mid_ = register_module("mid_block", std::make_shared<Stage>(plan.mid, spec));
  for (const auto& st : plan.up) {
    up_.push_back(std::make_shared<Stage>(st, spec));
    up->push_back(up_.back());
  }
  register_module("up_blocks", up);
  conv_norm_out_ = register_module("conv_norm_out",
                                   torch::nn::GroupNorm(torch::nn::GroupNormOptions(spec.norm_groups, C).eps(1e-5)));
  conv_out_ =
      register_module("conv_out", torch::nn::Conv2d(torch::nn::Conv2dOptions(C, spec.out_channels, 3).padding(1)));

  // The units, in forward order (the order forward() runs them).
  std::unordered_map<const torch::nn::Module*, std::string> name_of;
  for (const auto& item : named_modules("", false)) name_of[item.value().get()] = item.key();
  auto unit = [&](const auto& block) {
    using Block = typename std::decay_t<decltype(block)>::element_type;
    return Unit<Block>(this, register_unit(name_of.at(block.get()), {block}), block);
  };
  auto stage_units = [&](const Stage& st) {
    StageUnits u;
    for (size_t j = 0; j < st.resnets.size(); ++j) {
      u.resnets.push_back(unit(st.resnets[j]));
      if (j < st.attentions.size()) u.attentions.push_back(unit(st.attentions[j]));
    }
    for (const auto& sampler : st.samplers) u.samplers.push_back(unit(sampler));
    return u;
  };
  std::vector<std::shared_ptr<torch::nn::Module>> stem{time_embedding_};
  if (control_embedding_) stem.push_back(control_embedding_.ptr());
  if (class_embedder_) stem.push_back(class_embedder_);
  stem_ = Unit<Stem>(this, register_unit("time_embedding", stem),
                     std::make_shared<Stem>(Stem{time_embedding_, control_embedding_, class_table}));
  conv_in_unit_ =
      Unit<ConvIn>(this, register_unit("conv_in", {conv_in_.ptr()}), std::make_shared<ConvIn>(ConvIn{conv_in_}));
  for (const auto& st : down_) down_units_.push_back(stage_units(*st));
  mid_units_.resnets.push_back(unit(mid_->resnets[0]));
  for (const auto& a : mid_->attentions) mid_units_.attentions.push_back(unit(a));
  mid_units_.resnets.push_back(unit(mid_->resnets[1]));
  for (const auto& st : up_) up_units_.push_back(stage_units(*st));
  head_ = Unit<Head>(this, register_unit("conv_out", {conv_norm_out_.ptr(), conv_out_.ptr()}),
                     std::make_shared<Head>(Head{conv_norm_out_, conv_out_, act}));
}

static std::string shape_of(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "," : "") + std::to_string(t.size(i));
  return s + "]";
}

void UNetImpl::check_inputs(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& text,
                            const torch::Tensor& mask, const torch::Tensor& labels) const {
  const int64_t factor = int64_t{1} << (spec_.num_levels() - 1);
  if (!x.defined() || x.dim() != 4 || x.size(1) != spec_.in_channels)
    throw Error("x_t", "expected [B, " + std::to_string(spec_.in_channels) + ", H, W], got " +
                           (x.defined() ? shape_of(x) : std::string("an undefined tensor")));
  if (x.size(2) % factor || x.size(3) % factor)
    throw Error("x_t", "spatial size " + std::to_string(x.size(2)) + "x" + std::to_string(x.size(3)) +
                           " is not divisible by 2^(levels-1) = " + std::to_string(factor));
  const int64_t B = x.size(0);
  if (!t.defined() || t.dim() != 1 || t.size(0) != B)
    throw Error("t",
                "expected [" + std::to_string(B) + "], got " + (t.defined() ? shape_of(t) : std::string("undefined")));
  if (spec_.num_classes > 0) {
    if (!labels.defined() || labels.dim() != 1 || labels.size(0) != B || labels.scalar_type() != torch::kLong)
      throw Error("labels", "a class-conditional UNet needs int64 labels [" + std::to_string(B) + "], got " +
                                (labels.defined() ? shape_of(labels) + " " + c10::toString(labels.scalar_type())
                                                  : std::string("none")));
    if (labels.is_cpu() && (labels.min().item<int64_t>() < 0 || labels.max().item<int64_t>() > spec_.num_classes))
      throw Error("labels", "labels must be in 0.." + std::to_string(spec_.num_classes) + " (" +
                                std::to_string(spec_.num_classes) + " = the null class)");
    if (text.defined() || mask.defined())
      throw Error("text", "a class-conditional UNet reads labels, not text (pass no text and no text_mask)");
    return;
  }
  if (labels.defined()) throw Error("labels", "a text-conditional UNet takes no labels (num_classes = 0)");
  if (!text.defined() || text.dim() != 3 || text.size(0) != B || text.size(2) != spec_.context_dim)
    throw Error("text", "expected [" + std::to_string(B) + ", T, " + std::to_string(spec_.context_dim) + "], got " +
                            (text.defined() ? shape_of(text) : std::string("undefined")));
  if (mask.defined()) {
    if (mask.dim() != 2 || mask.size(0) != B || mask.size(1) != text.size(1) || mask.scalar_type() != torch::kBool)
      throw Error("text_mask", "expected bool [" + std::to_string(B) + ", " + std::to_string(text.size(1)) + "], got " +
                                   shape_of(mask) + " " + std::string(c10::toString(mask.scalar_type())));
    // (read on the host only: reading a GPU mask would stop the host for every forward; masks that
    // pad_text made always have a real token per row)
    if (mask.is_cpu() && !mask.any(1).all().item<bool>())
      throw Error("text_mask", "a sample has no real token (every row needs at least one true)");
  }
}

torch::Tensor UNetImpl::forward(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                                const torch::Tensor& text_mask, const ControlInputs* controls,
                                const torch::Tensor& labels) {
  check_inputs(x_t, t, text, text_mask, labels);
  if (controls && !spec_.control_conditioning)
    throw Error("controls", "this model was built without control_conditioning");
  if (controls && controls->high.defined() && controls->high.size(0) != x_t.size(0))
    throw Error("controls.high", "batch size differs from x_t's");
  // Each unit runs through the model's unit runner (models/unit.h): tensors are its inputs, the
  // mask and the controls are held by value (a checkpointing runner calls the unit again in backward).
  const std::optional<ControlInputs> ctl = controls ? std::optional<ControlInputs>(*controls) : std::nullopt;
  const std::vector<torch::Tensor> e =
      stem_(timestep_features(t, spec_.model_channels).to(conv_in_->weight.dtype()), held(ctl), held(labels));
  const torch::Tensor& temb = e[0];
  const torch::Tensor& context = spec_.num_classes > 0 ? e[1] : text;  // (class: the label's one token)
  torch::Tensor h = conv_in_unit_(x_t);
  const auto mask = held(text_mask);
  std::vector<torch::Tensor> skips{h};
  for (const StageUnits& st : down_units_) {
    for (size_t j = 0; j < st.resnets.size(); ++j) {
      h = st.resnets[j](h, temb);
      if (j < st.attentions.size()) h = st.attentions[j](h, context, mask);
      skips.push_back(h);
    }
    for (const auto& sampler : st.samplers) {
      h = sampler(h, temb);
      skips.push_back(h);
    }
  }
  h = mid_units_.resnets[0](h, temb);
  for (const auto& a : mid_units_.attentions) h = a(h, context, mask);
  h = mid_units_.resnets[1](h, temb);
  for (const StageUnits& st : up_units_) {
    for (size_t j = 0; j < st.resnets.size(); ++j) {
      h = torch::cat({h, skips.back()}, 1);
      skips.pop_back();
      h = st.resnets[j](h, temb);
      if (j < st.attentions.size()) h = st.attentions[j](h, context, mask);
    }
    for (const auto& sampler : st.samplers) h = sampler(h, temb);
  }
  return head_(h);
}

}  // namespace dtrainer::models
