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

  // Units in forward order (the order forward() runs them).
  std::unordered_map<const torch::nn::Module*, std::string> name_of;
  for (const auto& item : named_modules("", false)) name_of[item.value().get()] = item.key();
  auto add = [&](std::string name, std::vector<std::shared_ptr<torch::nn::Module>> modules) {
    for (const auto& m : modules) unit_of_[m.get()] = units_.size();
    units_.emplace_back(std::move(name), std::move(modules));
  };
  auto add_block = [&](const std::shared_ptr<torch::nn::Module>& m) { add(name_of.at(m.get()), {m}); };
  std::vector<std::shared_ptr<torch::nn::Module>> stem{time_embedding_};
  if (control_embedding_) stem.push_back(control_embedding_.ptr());
  add("time_embedding", stem);
  add("conv_in", {conv_in_.ptr()});
  for (const auto& st : down_) {
    for (size_t j = 0; j < st->resnets.size(); ++j) {
      add_block(st->resnets[j]);
      if (j < st->attentions.size()) add_block(st->attentions[j]);
    }
    for (const auto& s : st->samplers) add_block(s);
  }
  add_block(mid_->resnets[0]);
  for (const auto& a : mid_->attentions) add_block(a);
  add_block(mid_->resnets[1]);
  for (const auto& st : up_) {
    for (size_t j = 0; j < st->resnets.size(); ++j) {
      add_block(st->resnets[j]);
      if (j < st->attentions.size()) add_block(st->attentions[j]);
    }
    for (const auto& s : st->samplers) add_block(s);
  }
  add("conv_out", {conv_norm_out_.ptr(), conv_out_.ptr()});
}

std::vector<ModelUnit> UNetImpl::units() {
  std::vector<ModelUnit> out;
  for (const auto& [name, modules] : units_) {
    ModelUnit u{name, {}};
    for (const auto& m : modules)
      for (const auto& p : m->parameters()) u.parameters.push_back(p);
    out.push_back(std::move(u));
  }
  return out;
}

static std::string shape_of(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? "," : "") + std::to_string(t.size(i));
  return s + "]";
}

void UNetImpl::check_inputs(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& text,
                            const torch::Tensor& mask) const {
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
                                const torch::Tensor& text_mask, const ControlInputs* controls) {
  check_inputs(x_t, t, text, text_mask);
  if (controls && !spec_.control_conditioning)
    throw Error("controls", "this model was built without control_conditioning");
  const Act act = spec_.layout == UNetLayout::kDeepFloydIF ? Act::kGELU : Act::kSiLU;
  if (controls && controls->high.defined() && controls->high.size(0) != x_t.size(0))
    throw Error("controls.high", "batch size differs from x_t's");
  // Every unit runs through run_unit with a function that owns what it captures (a checkpointing
  // runner calls it again in backward).
  auto te = time_embedding_;
  auto ce = control_embedding_;
  const std::optional<ControlInputs> ctl = controls ? std::optional<ControlInputs>(*controls) : std::nullopt;
  const int64_t C = spec_.model_channels;
  const torch::Tensor temb = run_unit(0,
                                      [te, ce, ctl](const std::vector<torch::Tensor>& in) mutable {
                                        torch::Tensor e = te->forward(in[0]);
                                        if (ctl) e = e + ce->forward(*ctl);  // [S2]: c_emb joins the time embedding
                                        return e;
                                      },
                                      {timestep_features(t, C).to(conv_in_->weight.dtype())});
  auto conv_in = conv_in_;
  torch::Tensor h =
      run_unit(1, [conv_in](const std::vector<torch::Tensor>& in) mutable { return ops::conv(conv_in, in[0]); }, {x_t});

  auto temb_block = [&](const std::shared_ptr<TembBlock>& block, const torch::Tensor& x) {
    return run_unit(unit_of_.at(block.get()),
                    [block](const std::vector<torch::Tensor>& in) { return block->forward(in[0], in[1]); }, {x, temb});
  };
  auto text_block = [&](const std::shared_ptr<TextBlock>& block, const torch::Tensor& x) {
    return run_unit(
        unit_of_.at(block.get()),
        [block, text_mask](const std::vector<torch::Tensor>& in) { return block->forward(in[0], in[1], text_mask); },
        {x, text});
  };
  std::vector<torch::Tensor> skips{h};
  for (auto& st : down_) {
    for (size_t j = 0; j < st->resnets.size(); ++j) {
      h = temb_block(st->resnets[j], h);
      if (j < st->attentions.size()) h = text_block(st->attentions[j], h);
      skips.push_back(h);
    }
    for (auto& s : st->samplers) {
      h = temb_block(s, h);
      skips.push_back(h);
    }
  }
  h = temb_block(mid_->resnets[0], h);
  for (auto& a : mid_->attentions) h = text_block(a, h);
  h = temb_block(mid_->resnets[1], h);
  for (auto& st : up_) {
    for (size_t j = 0; j < st->resnets.size(); ++j) {
      h = torch::cat({h, skips.back()}, 1);
      skips.pop_back();
      h = temb_block(st->resnets[j], h);
      if (j < st->attentions.size()) h = text_block(st->attentions[j], h);
    }
    for (auto& s : st->samplers) h = temb_block(s, h);
  }
  auto norm_out = conv_norm_out_;
  auto conv_out = conv_out_;
  return run_unit(units_.size() - 1,
                  [norm_out, conv_out, act](const std::vector<torch::Tensor>& in) mutable {
                    return ops::conv(conv_out, activate(act, ops::norm(norm_out, in[0])));
                  },
                  {h});
}

}  // namespace dtrainer::models
