#include "dtrainer/models/backbone.h"

#include <map>
#include <sstream>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/transformer.h"
#include "dtrainer/models/transformer_cost.h"
#include "dtrainer/models/unet.h"
#include "dtrainer/models/unet_cost.h"
#include "dtrainer/models/unet_presets.h"

namespace dtrainer::models {
namespace {

// A LibTorch module holder (UNet, DiffusionTransformer) behind the Backbone interface.
template <typename Net, typename Spec>
class ModuleBackbone final : public Backbone {
 public:
  explicit ModuleBackbone(const Spec& spec) : net_(spec), first_param_(net_->parameters().front()) {}
  torch::Tensor forward(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                        const torch::Tensor& text_mask, const ControlInputs* controls) override {
    // The inputs in the dtype the parameters have now (a bf16 compute copy makes them bf16; under
    // zero3 they are empty between runs but keep their dtype), the prediction back in fp32.
    const torch::ScalarType dt = first_param_.scalar_type();
    const torch::Tensor text_in = text.defined() ? text.to(dt) : text;
    return net_->forward(x_t.to(dt), t, text_in, text_mask, controls).to(torch::kFloat32);
  }
  torch::nn::Module& module() override { return *net_; }
  UnitModel& unit_model() override { return *net_; }

 private:
  Net net_;
  torch::Tensor first_param_;  // (the same TensorImpl whatever set_data later puts in it)
};

void require_known(const std::string& preset) {
  if (!is_unet_preset(preset) && !is_transformer_preset(preset))
    throw Error("model", "unknown preset '" + preset + "' (dtmodel list shows them)");
}

// Applies the key=value overrides, then the fields the data decides (an explicit override of one of
// those must agree with the data). `set_field(spec, key, value)` is the family's field setter.
template <typename Spec, typename SetField>
void apply_overrides(Spec& spec, const std::vector<std::string>& overrides,
                     const std::map<std::string, int64_t>& from_data, SetField set_field) {
  std::map<std::string, std::string> set;
  for (const auto& kv : overrides) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) throw Error("model_set", "'" + kv + "' is not key=value");
    set[kv.substr(0, eq)] = kv.substr(eq + 1);
    set_field(spec, kv.substr(0, eq), kv.substr(eq + 1));
  }
  for (const auto& [key, value] : from_data) {
    if (set.count(key) && set[key] != std::to_string(value))
      throw Error("model_set", key + "=" + set[key] + " contradicts the data (" + std::to_string(value) + ")");
    set_field(spec, key, std::to_string(value));
  }
}

BackboneSpec resolve_transformer(const std::string& preset, const std::vector<std::string>& overrides,
                                 const BackboneInputs& inputs, bool control_conditioning) {
  BackboneSpec out;
  out.family = "transformer";
  out.inputs = inputs;
  TransformerSpec& spec = out.transformer;
  spec = transformer_preset(preset);
  apply_overrides(
      spec, overrides,
      {{"in_channels", inputs.latent_channels}, {"sample_size", inputs.latent_size}, {"context_dim", inputs.text_dim}},
      set_transformer_field);
  if (spec.conditioning == "class")
    throw Error("model_set",
                preset + " is class-conditional; the training data carries captions: set conditioning=text");
  if (control_conditioning && !spec.control_conditioning())
    throw Error("control_conditioning",
                "among the transformers only mmDiT++ (family mmdit_pp) has the control embedding");
  spec.validate();
  return out;
}

}  // namespace

bool BackboneSpec::control_conditioning() const {
  return family == "transformer" ? transformer.control_conditioning() : unet.control_conditioning;
}

BackboneInputs preset_inputs(const std::string& preset) {
  require_known(preset);
  if (is_transformer_preset(preset)) {
    const TransformerSpec s = transformer_preset(preset);
    return {s.in_channels, s.sample_size, s.context_dim, 77};
  }
  const UNetSpec s = unet_preset(preset);
  return {s.in_channels, s.sample_size, s.context_dim, 77};
}

BackboneSpec resolve_backbone(const std::string& preset, const std::vector<std::string>& overrides,
                              const BackboneInputs& inputs, bool control_conditioning) {
  require_known(preset);
  if (is_transformer_preset(preset)) return resolve_transformer(preset, overrides, inputs, control_conditioning);
  BackboneSpec out;
  out.inputs = inputs;
  UNetSpec& spec = out.unet;
  spec = unet_preset(preset);
  apply_overrides(spec, overrides,
                  {{"in_channels", inputs.latent_channels},
                   {"out_channels", inputs.latent_channels},
                   {"sample_size", inputs.latent_size},
                   {"context_dim", inputs.text_dim}},
                  set_unet_field);
  if (control_conditioning) spec.control_conditioning = true;
  count_unet(spec, {inputs.latent_size, inputs.latent_size, inputs.text_len});  // validates
  return out;
}

BackboneCost backbone_cost(const BackboneSpec& b) {
  if (b.family == "transformer") {
    const TransformerCost c = count_transformer(b.transformer, b.inputs.text_len);
    return {c.num_params, c.total.macs_linear_conv, c.total.macs_attention, c.total.activation_elems};
  }
  const UNetCost c = count_unet(b.unet, {b.inputs.latent_size, b.inputs.latent_size, b.inputs.text_len});
  return {c.num_params, c.total.macs_linear_conv, c.total.macs_attention, c.total.activation_elems};
}

std::string backbone_summary(const BackboneSpec& b) {
  if (b.family == "transformer") {
    const TransformerSpec& s = b.transformer;
    std::ostringstream o;
    o << "transformer " << s.name << " (" << to_string(s.family) << "): hidden " << s.hidden_size << ", depth "
      << s.depth << ", heads " << s.num_heads << ", patch " << s.patch_size << ", context_dim " << s.context_dim
      << ", input " << s.in_channels << "x" << s.sample_size << "x" << s.sample_size;
    return o.str();
  }
  const UNetSpec& s = b.unet;
  std::ostringstream o;
  o << "UNet " << s.name << " (" << to_string(s.layout) << "): C " << s.model_channels << ", channel_mult [";
  for (size_t i = 0; i < s.channel_mult.size(); ++i) o << (i ? "," : "") << s.channel_mult[i];
  o << "], transformer_depth [";
  for (size_t i = 0; i < s.transformer_depth.size(); ++i) o << (i ? "," : "") << s.transformer_depth[i];
  o << "], context_dim " << s.context_dim << ", input " << s.in_channels << "x" << s.sample_size << "x"
    << s.sample_size;
  return o.str();
}

std::unique_ptr<Backbone> build_backbone(const BackboneSpec& spec) {
  if (spec.family == "transformer")
    return std::make_unique<ModuleBackbone<DiffusionTransformer, TransformerSpec>>(spec.transformer);
  return std::make_unique<ModuleBackbone<UNet, UNetSpec>>(spec.unet);
}

}  // namespace dtrainer::models
