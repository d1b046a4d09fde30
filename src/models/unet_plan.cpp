#include "dtrainer/models/unet_plan.h"

namespace dtrainer::models {

UNetPlan plan_unet(const UNetSpec& spec) {
  spec.validate();
  UNetPlan plan;
  plan.spec = spec;
  const bool is_if = spec.layout == UNetLayout::kDeepFloydIF;
  const int64_t levels = spec.num_levels();

  // Channels of every tensor pushed on the skip stack, in push order (conv_in output first).
  std::vector<int64_t> skips{spec.model_channels};
  int64_t cur = spec.model_channels;

  auto attention = [&](const std::string& stage, size_t j, int64_t ch, int64_t depth, int64_t level) {
    return AttentionPlan{stage + ".attentions." + std::to_string(j), ch, depth, level};
  };

  for (int64_t l = 0; l < levels; ++l) {
    StagePlan st;
    st.name = "down_blocks." + std::to_string(l);
    st.level = l;
    const int64_t ch = spec.level_channels(l);
    for (int64_t j = 0; j < spec.res_blocks(l); ++j) {
      st.resnets.push_back({st.name + ".resnets." + std::to_string(j), cur, ch, l, Resample::kNone});
      if (spec.transformer_depth[l] > 0)
        st.attentions.push_back(attention(st.name, j, ch, spec.transformer_depth[l], l));
      cur = ch;
      skips.push_back(cur);
    }
    if (l < levels - 1) {
      const std::string name = st.name + ".downsamplers.0";
      if (is_if)
        st.resnet_samplers.push_back({name, cur, cur, l, Resample::kDown});
      else
        st.conv_samplers.push_back({name, cur, l, Resample::kDown});
      skips.push_back(cur);
    }
    plan.down.push_back(std::move(st));
  }

  plan.mid.name = "mid_block";
  plan.mid.level = levels - 1;
  for (int j = 0; j < 2; ++j)
    plan.mid.resnets.push_back({"mid_block.resnets." + std::to_string(j), cur, cur, levels - 1, Resample::kNone});
  if (spec.mid_depth() > 0) plan.mid.attentions.push_back(attention("mid_block", 0, cur, spec.mid_depth(), levels - 1));

  for (int64_t i = 0; i < levels; ++i) {
    const int64_t l = levels - 1 - i;
    StagePlan st;
    st.name = "up_blocks." + std::to_string(i);
    st.level = l;
    const int64_t ch = spec.level_channels(l);
    for (int64_t j = 0; j < spec.res_blocks(l) + 1; ++j) {
      const int64_t skip = skips.back();
      skips.pop_back();
      st.resnets.push_back({st.name + ".resnets." + std::to_string(j), cur + skip, ch, l, Resample::kNone});
      if (spec.transformer_depth[l] > 0)
        st.attentions.push_back(attention(st.name, j, ch, spec.transformer_depth[l], l));
      cur = ch;
    }
    if (l > 0) {
      const std::string name = st.name + ".upsamplers.0";
      if (is_if)
        st.resnet_samplers.push_back({name, cur, cur, l, Resample::kUp});
      else
        st.conv_samplers.push_back({name, cur, l, Resample::kUp});
    }
    plan.up.push_back(std::move(st));
  }
  return plan;
}

}  // namespace dtrainer::models
