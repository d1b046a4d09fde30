#include "dtrainer/models/unet_cost.h"

#include "dtrainer/core/error.h"
#include "dtrainer/models/unet_plan.h"

namespace dtrainer::models {

int64_t ParamEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

OpCount& OpCount::operator+=(const OpCount& o) {
  macs_linear_conv += o.macs_linear_conv;
  macs_attention += o.macs_attention;
  activation_elems += o.activation_elems;
  return *this;
}

namespace {

// Walks the plan once, recording each parameter and each op's cost against the current stage.
class Counter {
 public:
  // (a class-conditional UNet's context is one token, whatever text length is asked)
  Counter(const UNetPlan& plan, const UNetCostQuery& q) : plan_(plan), spec_(plan.spec), q_(q) {
    if (spec_.num_classes > 0) q_.text_len = 1;
  }

  UNetCost run() {
    const int64_t C = spec_.model_channels, temb = spec_.time_embed_dim();
    begin("conv_in", 0);
    conv("conv_in", spec_.in_channels, C, 3, 0);
    begin("time_embedding", -1);
    linear("time_embedding.linear_1", C, temb, 1, true);
    linear("time_embedding.linear_2", temb, temb, 1, true);
    if (spec_.control_conditioning) {  // [S2] control embedding, see models/control_embedding.h
      begin("control_embedding", -1);
      const int64_t fd = spec_.control_feature_dim;
      linear("control_embedding.high.linear_1", 4 * fd, temb, 1, true);
      linear("control_embedding.high.linear_2", temb, temb, 1, true);
      linear("control_embedding.low.linear_1", 2 * fd, temb, 1, true);
      linear("control_embedding.low.linear_2", temb, temb, 1, true);
    }
    if (spec_.num_classes > 0) {  // the class table: its one token is every cross-attention's context
      begin("class_embedder", -1);
      param("class_embedder.embedding_table.weight", {spec_.num_classes + 1, spec_.context_dim});
    }
    for (const auto& st : plan_.down) stage(st, false);
    stage(plan_.mid, true);
    for (const auto& st : plan_.up) stage(st, false);
    begin("conv_out", 0);
    norm("conv_norm_out", C, C * pixels(0));
    conv("conv_out", C, spec_.out_channels, 3, 0);
    for (const auto& s : out_.stages) {
      out_.num_params += s.params;
      out_.params_transformer += s.params_transformer;
      out_.total += s.ops;
      out_.transformer += s.transformer;
    }
    return std::move(out_);
  }

 private:
  int64_t h(int64_t level) const { return q_.latent_h >> level; }
  int64_t w(int64_t level) const { return q_.latent_w >> level; }
  int64_t pixels(int64_t level) const { return h(level) * w(level); }

  void begin(const std::string& name, int64_t level) {
    StageCost s;
    s.name = name;
    s.level = level;
    out_.stages.push_back(s);
  }
  StageCost& cur() { return out_.stages.back(); }

  void param(const std::string& name, std::vector<int64_t> shape) {
    ParamEntry e{name, std::move(shape)};
    cur().params += e.numel();
    if (in_transformer_) cur().params_transformer += e.numel();
    out_.params.push_back(std::move(e));
  }
  void ops(int64_t macs_linear_conv, int64_t macs_attention, int64_t activation_elems) {
    OpCount o{macs_linear_conv, macs_attention, activation_elems};
    cur().ops += o;
    if (in_transformer_) cur().transformer += o;
  }

  // k x k convolution whose *output* is at `out_level`.
  void conv(const std::string& name, int64_t cin, int64_t cout, int64_t k, int64_t out_level) {
    param(name + ".weight", {cout, cin, k, k});
    param(name + ".bias", {cout});
    ops(cout * cin * k * k * pixels(out_level), 0, cout * pixels(out_level));
  }
  void linear(const std::string& name, int64_t in, int64_t out, int64_t tokens, bool bias) {
    param(name + ".weight", {out, in});
    if (bias) param(name + ".bias", {out});
    ops(tokens * in * out, 0, tokens * out);
  }
  void norm(const std::string& name, int64_t channels, int64_t elems) {
    param(name + ".weight", {channels});
    param(name + ".bias", {channels});
    ops(0, 0, elems);
  }
  // softmax(Q K^T) V over `heads` heads of width head_dim: QK^T and AV are nq*nk*head_dim MACs each.
  void attention(int64_t channels, int64_t nq, int64_t nk) {
    const int64_t heads = spec_.heads(channels);
    ops(0, 2 * heads * nq * nk * spec_.head_dim, heads * nq * nk);
  }

  void stage(const StagePlan& st, bool is_mid) {
    begin(st.name, st.level);
    if (is_mid) {
      resnet(st.resnets[0]);
      for (const auto& a : st.attentions) attention_block(a);
      resnet(st.resnets[1]);
    } else {
      for (size_t j = 0; j < st.resnets.size(); ++j) {
        resnet(st.resnets[j]);
        if (j < st.attentions.size()) attention_block(st.attentions[j]);
      }
    }
    for (const auto& s : st.conv_samplers) {
      const int64_t out_level = s.direction == Resample::kDown ? s.level + 1 : s.level - 1;
      conv(s.name + ".conv", s.channels, s.channels, 3, out_level);
    }
    for (const auto& r : st.resnet_samplers) resnet(r);
  }

  void resnet(const ResnetPlan& r) {
    const bool scale_shift = spec_.layout == UNetLayout::kDeepFloydIF;
    const int64_t out_level = r.resample == Resample::kDown ? r.level + 1
                              : r.resample == Resample::kUp ? r.level - 1
                                                            : r.level;
    norm(r.name + ".norm1", r.in_channels, r.in_channels * pixels(r.level));
    conv(r.name + ".conv1", r.in_channels, r.out_channels, 3, out_level);
    linear(r.name + ".time_emb_proj", spec_.time_embed_dim(), (scale_shift ? 2 : 1) * r.out_channels, 1, true);
    norm(r.name + ".norm2", r.out_channels, r.out_channels * pixels(out_level));
    conv(r.name + ".conv2", r.out_channels, r.out_channels, 3, out_level);
    if (r.in_channels != r.out_channels) conv(r.name + ".conv_shortcut", r.in_channels, r.out_channels, 1, out_level);
  }

  void attention_block(const AttentionPlan& a) {
    in_transformer_ = true;
    if (spec_.layout == UNetLayout::kDeepFloydIF)
      if_attention(a);
    else
      transformer(a);
    in_transformer_ = false;
  }

  // Transformer2DModel: GroupNorm -> proj_in -> depth x BasicTransformerBlock -> proj_out.
  void transformer(const AttentionPlan& a) {
    const int64_t c = a.channels, n = pixels(a.level), T = q_.text_len, ctx = spec_.context_dim;
    norm(a.name + ".norm", c, c * n);
    auto proj = [&](const std::string& name) {
      if (spec_.use_linear_projection)
        linear(name, c, c, n, true);
      else
        conv(name, c, c, 1, a.level);
    };
    proj(a.name + ".proj_in");
    for (int64_t k = 0; k < a.depth; ++k) {
      const std::string b = a.name + ".transformer_blocks." + std::to_string(k);
      norm(b + ".norm1", c, c * n);  // self-attention
      linear(b + ".attn1.to_q", c, c, n, false);
      linear(b + ".attn1.to_k", c, c, n, false);
      linear(b + ".attn1.to_v", c, c, n, false);
      attention(c, n, n);
      linear(b + ".attn1.to_out.0", c, c, n, true);
      norm(b + ".norm2", c, c * n);  // cross-attention to the text tokens
      linear(b + ".attn2.to_q", c, c, n, false);
      linear(b + ".attn2.to_k", ctx, c, T, false);
      linear(b + ".attn2.to_v", ctx, c, T, false);
      attention(c, n, T);
      linear(b + ".attn2.to_out.0", c, c, n, true);
      norm(b + ".norm3", c, c * n);  // GEGLU feed-forward
      const int64_t inner = spec_.ff_mult * c;
      linear(b + ".ff.net.0.proj", c, 2 * inner, n, true);
      linear(b + ".ff.net.2", inner, c, n, true);
    }
    proj(a.name + ".proj_out");
  }

  // IF attention block: keys/values = [text tokens through add_k/v_proj ; pixels through to_k/v].
  void if_attention(const AttentionPlan& a) {
    const int64_t c = a.channels, n = pixels(a.level), T = q_.text_len, ctx = spec_.context_dim;
    norm(a.name + ".group_norm", c, c * n);
    norm(a.name + ".norm_cross", ctx, ctx * T);
    linear(a.name + ".to_q", c, c, n, true);
    linear(a.name + ".to_k", c, c, n, true);
    linear(a.name + ".to_v", c, c, n, true);
    linear(a.name + ".add_k_proj", ctx, c, T, true);
    linear(a.name + ".add_v_proj", ctx, c, T, true);
    attention(c, n, n + T);
    linear(a.name + ".to_out.0", c, c, n, true);
  }

  const UNetPlan& plan_;
  const UNetSpec& spec_;
  UNetCostQuery q_;
  UNetCost out_;
  bool in_transformer_ = false;
};

}  // namespace

UNetCost count_unet(const UNetSpec& spec, const UNetCostQuery& query) {
  const UNetPlan plan = plan_unet(spec);
  const int64_t factor = int64_t{1} << (spec.num_levels() - 1);
  if (query.latent_h < 1 || query.latent_w < 1 || query.latent_h % factor || query.latent_w % factor)
    throw Error("latent size", std::to_string(query.latent_h) + "x" + std::to_string(query.latent_w) +
                                   " is not divisible by 2^(levels-1) = " + std::to_string(factor));
  if (query.text_len < 1) throw Error("text_len", "must be at least 1");
  return Counter(plan, query).run();
}

}  // namespace dtrainer::models
