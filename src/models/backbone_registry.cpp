#include "dtrainer/models/backbone_spec.h"

#include <map>
#include <sstream>

#include "dtrainer/core/error.h"
#include "dtrainer/models/transformer_cost.h"
#include "dtrainer/models/unet_cost.h"
#include "dtrainer/models/unet_presets.h"

namespace dtrainer::models {
namespace {

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

// What every family's presets share: a name, and the input shape they were trained at.
template <typename Spec>
std::vector<std::string> names_of(const std::vector<Spec>& presets) {
  std::vector<std::string> out;
  for (const auto& s : presets) out.push_back(s.name);
  return out;
}
template <typename Spec>
BackboneInputs inputs_of(const Spec& s) {
  return {s.in_channels, s.sample_size, s.context_dim, 77};
}

// ---- UNets ------------------------------------------------------------------------------------

std::vector<std::string> unet_preset_names() { return names_of(unet_presets()); }
BackboneInputs unet_preset_inputs(const std::string& preset) { return inputs_of(unet_preset(preset)); }

BackboneSpec resolve_unet(const std::string& preset, const std::vector<std::string>& overrides,
                          const BackboneInputs& inputs, bool control_conditioning) {
  BackboneSpec out;
  out.family = "unet";
  out.inputs = inputs;
  UNetSpec& spec = out.unet;
  spec = unet_preset(preset);
  apply_overrides(spec, overrides,
                  {{"in_channels", inputs.latent_channels},
                   {"out_channels", inputs.latent_channels},
                   {"sample_size", inputs.latent_size},
                   {"context_dim", inputs.text_dim}},
                  set_unet_field);
  if (spec.num_classes > 0)
    throw Error("model_set", preset + " is class-conditional; the training data carries captions: set num_classes=0");
  if (control_conditioning) spec.control_conditioning = true;
  count_unet(spec, {inputs.latent_size, inputs.latent_size, inputs.text_len});  // validates
  return out;
}

BackboneCost unet_backbone_cost(const BackboneSpec& b) {
  const UNetCost c = count_unet(b.unet, {b.inputs.latent_size, b.inputs.latent_size, b.inputs.text_len});
  return {c.num_params, c.total.macs_linear_conv, c.total.macs_attention, c.total.activation_elems};
}

std::string unet_summary(const BackboneSpec& b) {
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

// ---- Transformers -------------------------------------------------------------------------------

std::vector<std::string> transformer_preset_names() { return names_of(transformer_presets()); }
BackboneInputs transformer_preset_inputs(const std::string& preset) { return inputs_of(transformer_preset(preset)); }

BackboneCost transformer_backbone_cost(const BackboneSpec& b) {
  const TransformerCost c = count_transformer(b.transformer, b.inputs.text_len);
  return {c.num_params, c.total.macs_linear_conv, c.total.macs_attention, c.total.activation_elems,
          c.training_extra.macs_linear_conv + c.training_extra.macs_attention};
}

std::string transformer_summary(const BackboneSpec& b) {
  const TransformerSpec& s = b.transformer;
  std::ostringstream o;
  o << "transformer " << s.name << " (" << to_string(s.family) << "): hidden " << s.hidden_size << ", depth " << s.depth
    << ", heads " << s.num_heads << ", patch " << s.patch_size << ", context_dim " << s.context_dim << ", input "
    << s.in_channels << "x" << s.sample_size << "x" << s.sample_size;
  return o.str();
}

}  // namespace

// ---- The registry ------------------------------------------------------------------------------

const std::vector<BackboneFamily>& backbone_families() {
  static const std::vector<BackboneFamily> families = {
      {"unet", is_unet_preset, unet_preset_names, unet_preset_inputs, resolve_unet, unet_backbone_cost, unet_summary},
      {"transformer", is_transformer_preset, transformer_preset_names, transformer_preset_inputs, resolve_transformer,
       transformer_backbone_cost, transformer_summary},
  };
  return families;
}

const BackboneFamily& backbone_family(const std::string& name) {
  for (const auto& f : backbone_families())
    if (name == f.name) return f;
  throw Error("model", "no backbone family '" + name + "'");
}

const BackboneFamily& backbone_family_of_preset(const std::string& preset) {
  for (const auto& f : backbone_families())
    if (f.has_preset(preset)) return f;
  throw Error("model", "unknown preset '" + preset + "' (dtmodel list shows them)");
}

bool BackboneSpec::control_conditioning() const {
  return family == "transformer" ? transformer.control_conditioning() : unet.control_conditioning;
}

BackboneInputs preset_inputs(const std::string& preset) {
  return backbone_family_of_preset(preset).preset_inputs(preset);
}

BackboneSpec resolve_backbone(const std::string& preset, const std::vector<std::string>& overrides,
                              const BackboneInputs& inputs, bool control_conditioning) {
  return backbone_family_of_preset(preset).resolve(preset, overrides, inputs, control_conditioning);
}

BackboneCost backbone_cost(const BackboneSpec& b) { return backbone_family(b.family).cost(b); }

std::string backbone_summary(const BackboneSpec& b) { return backbone_family(b.family).summary(b); }

}  // namespace dtrainer::models
