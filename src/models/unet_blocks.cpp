#include "unet_blocks.h"

#include <cmath>

#include <torch/torch.h>

#include "dtrainer/models/op_tally.h"
#include "tallied_ops.h"

namespace dtrainer::models::unet_detail {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

torch::Tensor activate(Act act, const torch::Tensor& x) { return act == Act::kSiLU ? torch::silu(x) : torch::gelu(x); }

static nn::Conv2d make_conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2));
}
static nn::Linear make_linear(int64_t in, int64_t out, bool bias = true) {
  return nn::Linear(nn::LinearOptions(in, out).bias(bias));
}
static nn::GroupNorm make_group_norm(int64_t groups, int64_t channels, double eps) {
  return nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(eps));
}

TimestepEmbedding::TimestepEmbedding(int64_t in, int64_t out, Act act_) : act(act_) {
  linear_1 = register_module("linear_1", make_linear(in, out));
  linear_2 = register_module("linear_2", make_linear(out, out));
}

torch::Tensor TimestepEmbedding::forward(const torch::Tensor& features) {
  return ops::linear(linear_2, activate(act, ops::linear(linear_1, features)));
}

ResnetBlock::ResnetBlock(const ResnetPlan& p, const UNetSpec& spec)
    : resample(p.resample),
      scale_shift(spec.layout == UNetLayout::kDeepFloydIF),
      act(spec.layout == UNetLayout::kDeepFloydIF ? Act::kGELU : Act::kSiLU) {
  norm1 = register_module("norm1", make_group_norm(spec.norm_groups, p.in_channels, 1e-5));
  conv1 = register_module("conv1", make_conv(p.in_channels, p.out_channels, 3));
  time_emb_proj =
      register_module("time_emb_proj", make_linear(spec.time_embed_dim(), (scale_shift ? 2 : 1) * p.out_channels));
  norm2 = register_module("norm2", make_group_norm(spec.norm_groups, p.out_channels, 1e-5));
  conv2 = register_module("conv2", make_conv(p.out_channels, p.out_channels, 3));
  if (p.in_channels != p.out_channels)
    conv_shortcut = register_module("conv_shortcut", make_conv(p.in_channels, p.out_channels, 1));
}

static torch::Tensor resample_map(Resample r, const torch::Tensor& x) {
  if (r == Resample::kDown) return F::avg_pool2d(x, F::AvgPool2dFuncOptions(2).stride(2));
  if (r == Resample::kUp)
    return F::interpolate(
        x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
  return x;
}

torch::Tensor ResnetBlock::forward(const torch::Tensor& x_in, const torch::Tensor& temb) {
  const torch::Tensor x = resample_map(resample, x_in);
  torch::Tensor h = resample_map(resample, activate(act, ops::norm(norm1, x_in)));
  h = ops::conv(conv1, h);
  torch::Tensor e = ops::linear(time_emb_proj, scale_shift ? temb : activate(act, temb)).unsqueeze(-1).unsqueeze(-1);
  if (scale_shift) {
    auto parts = e.chunk(2, 1);  // [S2]-style FiLM: h * (1 + scale) + shift
    h = ops::norm(norm2, h) * (1 + parts[0]) + parts[1];
  } else {
    h = ops::norm(norm2, h + e);
  }
  h = ops::conv(conv2, activate(act, h));
  return (conv_shortcut ? ops::conv(conv_shortcut, x) : x) + h;
}

ConvSampler::ConvSampler(const ConvSamplerPlan& p) : direction(p.direction) {
  conv = register_module("conv", make_conv(p.channels, p.channels, 3, direction == Resample::kDown ? 2 : 1));
}

torch::Tensor ConvSampler::forward(const torch::Tensor& x, const torch::Tensor&) {
  return ops::conv(conv, direction == Resample::kUp ? resample_map(Resample::kUp, x) : x);
}

CrossAttention::CrossAttention(int64_t dim, int64_t kv_dim, int64_t heads_) : heads(heads_) {
  to_q = register_module("to_q", make_linear(dim, dim, false));
  to_k = register_module("to_k", make_linear(kv_dim, dim, false));
  to_v = register_module("to_v", make_linear(kv_dim, dim, false));
  out = make_linear(dim, dim);
  to_out->push_back(out);
  register_module("to_out", to_out);
}

torch::Tensor CrossAttention::forward(const torch::Tensor& x, const torch::Tensor& context, const torch::Tensor& mask) {
  return ops::linear(
      out, ops::attention(ops::linear(to_q, x), ops::linear(to_k, context), ops::linear(to_v, context), heads, mask));
}

GegluProj::GegluProj(int64_t dim, int64_t inner) { proj = register_module("proj", make_linear(dim, 2 * inner)); }

FeedForward::FeedForward(int64_t dim, int64_t inner) {
  geglu = std::make_shared<GegluProj>(dim, inner);
  out = make_linear(inner, dim);
  net->push_back(geglu);
  net->push_back(nn::Dropout(0.0));  // net.1 keeps diffusers' index of net.2
  net->push_back(out);
  register_module("net", net);
}

torch::Tensor FeedForward::forward(const torch::Tensor& x) {
  auto parts = ops::linear(geglu->proj, x).chunk(2, -1);
  return ops::linear(out, parts[0] * torch::gelu(parts[1]));
}

BasicTransformerBlock::BasicTransformerBlock(int64_t dim, int64_t context_dim, int64_t heads, int64_t ff_inner) {
  norm1 = register_module("norm1", nn::LayerNorm(nn::LayerNormOptions({dim})));
  attn1 = register_module("attn1", std::make_shared<CrossAttention>(dim, dim, heads));
  norm2 = register_module("norm2", nn::LayerNorm(nn::LayerNormOptions({dim})));
  attn2 = register_module("attn2", std::make_shared<CrossAttention>(dim, context_dim, heads));
  norm3 = register_module("norm3", nn::LayerNorm(nn::LayerNormOptions({dim})));
  ff = register_module("ff", std::make_shared<FeedForward>(dim, ff_inner));
}

torch::Tensor BasicTransformerBlock::forward(const torch::Tensor& x, const torch::Tensor& text,
                                             const torch::Tensor& mask) {
  torch::Tensor h = ops::norm(norm1, x);
  torch::Tensor y = x + attn1->forward(h, h, torch::Tensor());
  y = y + attn2->forward(ops::norm(norm2, y), text, mask);
  return y + ff->forward(ops::norm(norm3, y));
}

Transformer2D::Transformer2D(const AttentionPlan& p, const UNetSpec& spec) {
  const int64_t c = p.channels;
  norm = register_module("norm", make_group_norm(spec.norm_groups, c, 1e-6));
  if (spec.use_linear_projection)
    proj_in_linear = register_module("proj_in", make_linear(c, c));
  else
    proj_in_conv = register_module("proj_in", make_conv(c, c, 1));
  nn::ModuleList list;
  for (int64_t k = 0; k < p.depth; ++k) {
    blocks.push_back(std::make_shared<BasicTransformerBlock>(c, spec.context_dim, spec.heads(c), spec.ff_mult * c));
    list->push_back(blocks.back());
  }
  register_module("transformer_blocks", list);
  if (spec.use_linear_projection)
    proj_out_linear = register_module("proj_out", make_linear(c, c));
  else
    proj_out_conv = register_module("proj_out", make_conv(c, c, 1));
}

torch::Tensor Transformer2D::forward(const torch::Tensor& x, const torch::Tensor& text, const torch::Tensor& mask) {
  TransformerScope scope;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto to_tokens = [&](const torch::Tensor& m) { return m.permute({0, 2, 3, 1}).reshape({B, H * W, C}); };
  auto to_map = [&](const torch::Tensor& t) { return t.reshape({B, H, W, C}).permute({0, 3, 1, 2}); };
  torch::Tensor h = ops::norm(norm, x);
  h = proj_in_linear ? ops::linear(proj_in_linear, to_tokens(h)) : to_tokens(ops::conv(proj_in_conv, h));
  for (auto& block : blocks) h = block->forward(h, text, mask);
  h = proj_out_linear
          ? to_map(ops::linear(proj_out_linear, h))
          : ops::conv(proj_out_conv, to_map(h).contiguous(x.suggest_memory_format()));  // (keeps channels-last)
  return x + h;
}

IFAttention::IFAttention(const AttentionPlan& p, const UNetSpec& spec) : heads(spec.heads(p.channels)) {
  const int64_t c = p.channels, ctx = spec.context_dim;
  group_norm = register_module("group_norm", make_group_norm(spec.norm_groups, c, 1e-5));
  norm_cross = register_module("norm_cross", make_group_norm(spec.norm_groups, ctx, 1e-5));
  to_q = register_module("to_q", make_linear(c, c));
  to_k = register_module("to_k", make_linear(c, c));
  to_v = register_module("to_v", make_linear(c, c));
  add_k_proj = register_module("add_k_proj", make_linear(ctx, c));
  add_v_proj = register_module("add_v_proj", make_linear(ctx, c));
  out = make_linear(c, c);
  to_out->push_back(out);
  register_module("to_out", to_out);
}

torch::Tensor IFAttention::forward(const torch::Tensor& x, const torch::Tensor& text, const torch::Tensor& mask) {
  TransformerScope scope;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const torch::Tensor h = ops::norm(group_norm, x).reshape({B, C, H * W}).transpose(1, 2);
  const torch::Tensor txt = ops::masked_group_norm(norm_cross, text.transpose(1, 2), mask).transpose(1, 2);
  const torch::Tensor k = torch::cat({ops::linear(add_k_proj, txt), ops::linear(to_k, h)}, 1);
  const torch::Tensor v = torch::cat({ops::linear(add_v_proj, txt), ops::linear(to_v, h)}, 1);
  torch::Tensor key_mask;
  if (mask.defined()) key_mask = torch::cat({mask, torch::ones({B, H * W}, mask.options())}, 1);
  const torch::Tensor o = ops::linear(out, ops::attention(ops::linear(to_q, h), k, v, heads, key_mask));
  return x + o.transpose(1, 2).reshape({B, C, H, W});
}

Stage::Stage(const StagePlan& p, const UNetSpec& spec) {
  nn::ModuleList res, att, samp;
  for (const auto& r : p.resnets) {
    resnets.push_back(std::make_shared<ResnetBlock>(r, spec));
    res->push_back(resnets.back());
  }
  for (const auto& a : p.attentions) {
    if (spec.layout == UNetLayout::kDeepFloydIF)
      attentions.push_back(std::make_shared<IFAttention>(a, spec));
    else
      attentions.push_back(std::make_shared<Transformer2D>(a, spec));
    att->push_back(attentions.back());
  }
  for (const auto& s : p.conv_samplers) samplers.push_back(std::make_shared<ConvSampler>(s));
  for (const auto& r : p.resnet_samplers) samplers.push_back(std::make_shared<ResnetBlock>(r, spec));
  for (const auto& s : samplers) samp->push_back(s);
  register_module("resnets", res);
  if (!attentions.empty()) register_module("attentions", att);
  if (!samplers.empty()) {
    const bool down = (!p.conv_samplers.empty() && p.conv_samplers[0].direction == Resample::kDown) ||
                      (!p.resnet_samplers.empty() && p.resnet_samplers[0].resample == Resample::kDown);
    register_module(down ? "downsamplers" : "upsamplers", samp);
  }
}

std::vector<torch::Tensor> Stem::forward(const torch::Tensor& features, const std::optional<ControlInputs>& controls,
                                         const torch::Tensor& labels) {
  torch::Tensor e = time->forward(features);
  if (controls) e = e + control->forward(*controls);  // [S2]: c_emb joins the time embedding
  if (!class_table) return {e};
  return {e, class_table(labels).unsqueeze(1)};
}

torch::Tensor ConvIn::forward(const torch::Tensor& x) { return ops::conv(conv, x); }

torch::Tensor Head::forward(const torch::Tensor& h) { return ops::conv(conv, activate(act, ops::norm(norm, h))); }

}  // namespace dtrainer::models::unet_detail
