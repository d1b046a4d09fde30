#pragma once
// The backbones as plain data, torch-free (dtmodel and the planners use it without LibTorch): what a
// backbone is (BackboneSpec: the family's spec and the data's shapes), what it costs, and the
// registry with one entry per family: its presets, how a preset resolves against the data, its
// analytic cost and its summary line. The registry is the only place that dispatches on the family;
// models/backbone.h adds the modules (build_backbone).

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/models/transformer_spec.h"
#include "dtrainer/models/unet_spec.h"

namespace dtrainer::models {

// Per-sample forward cost at the trained latent size and text length.
struct BackboneCost {
  int64_t params = 0;
  int64_t macs_linear_conv = 0;  // [S1]'s convention: weight MACs of linear and conv layers
  int64_t macs_attention = 0;    // QK^T and AV products
  int64_t activation_elems = 0;  // outputs of every op of one forward (a memory estimate)
  // MACs of the further forward passes a training step makes per sample (MDT's masked input, at its
  // mean mask ratio): not part of a forward, part of training_flops.
  int64_t macs_training_extra = 0;
  // FLOPs of one training step per sample: forward + backward = 3 forwards, 2 FLOPs per MAC,
  // attention products included (what TFLOP/s and MFU count; recomputation is not counted).
  int64_t training_flops() const { return 3 * 2 * (macs_linear_conv + macs_attention + macs_training_extra); }
};

// What the data fixes and the model must match.
struct BackboneInputs {
  int64_t latent_channels = 4;
  int64_t latent_size = 32;  // H = W
  int64_t text_dim = 1024;
  int64_t text_len = 77;
};

// A resolved backbone: plain data, nothing allocated (dry runs of 4B-parameter models stay cheap).
struct BackboneSpec {
  std::string family = "unet";  // unet | transformer
  UNetSpec unet;
  TransformerSpec transformer;
  BackboneInputs inputs;
  bool control_conditioning() const;  // the model takes [S2] control inputs
};

struct BackboneFamily {
  const char* name;  // BackboneSpec::family
  bool (*has_preset)(const std::string& preset);
  std::vector<std::string> (*preset_names)();
  BackboneInputs (*preset_inputs)(const std::string& preset);
  BackboneSpec (*resolve)(const std::string& preset, const std::vector<std::string>& overrides,
                          const BackboneInputs& inputs, bool control_conditioning);
  BackboneCost (*cost)(const BackboneSpec& spec);
  std::string (*summary)(const BackboneSpec& spec);
};
// Every family, in the order `dtmodel list` shows them.
const std::vector<BackboneFamily>& backbone_families();
// The family named `name` (BackboneSpec::family), or the family that has `preset`; an Error
// ("model") naming it when there is none.
const BackboneFamily& backbone_family(const std::string& name);
const BackboneFamily& backbone_family_of_preset(const std::string& preset);

// `preset` (a UNet or a transformer preset, `dtmodel list`) with `overrides` ("key=value", the
// spec's config keys) for data of shape `inputs`: in/out channels, sample size and context dim
// come from the data; an override that contradicts the data is an error naming the key.
// control_conditioning switches [S2]'s control embedding on (UNets; mmDiT++ always has it, the
// other transformers cannot). Throws Error naming the preset or the key.
BackboneSpec resolve_backbone(const std::string& preset, const std::vector<std::string>& overrides,
                              const BackboneInputs& inputs, bool control_conditioning);
BackboneCost backbone_cost(const BackboneSpec& spec);
std::string backbone_summary(const BackboneSpec& spec);  // one line: family, preset, key dimensions
// The preset's own input shape (for plans made without data).
BackboneInputs preset_inputs(const std::string& preset);

}  // namespace dtrainer::models
