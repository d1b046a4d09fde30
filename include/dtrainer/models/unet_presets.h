#pragma once
// The UNet presets of [S1] Table 1 (SPEC §2.1). Names are fixed; every field can be overridden.

#include <string>
#include <vector>

#include "dtrainer/models/unet_spec.h"

namespace dtrainer::models {

const std::vector<UNetSpec>& unet_presets();
bool is_unet_preset(const std::string& name);
// Throws Error("model", ...) listing the known presets when `name` is not one.
UNetSpec unet_preset(const std::string& name);

}  // namespace dtrainer::models
