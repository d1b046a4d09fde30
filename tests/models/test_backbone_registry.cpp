// The backbone registry (models/backbone_spec.h): every preset belongs to exactly one family, and
// resolves, against its own inputs, to a spec of that family whose cost is the family's own
// analytic count (count_unet / count_transformer, called here directly).
#include <catch2/catch.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/models/backbone_spec.h"
#include "dtrainer/models/transformer_cost.h"
#include "dtrainer/models/unet_cost.h"
#include "dtrainer/models/unet_presets.h"

using namespace dtrainer;
using namespace dtrainer::models;

TEST_CASE("registry: each preset is in one family and resolves to that family's spec and count") {
  size_t presets = 0;
  for (const BackboneFamily& f : backbone_families())
    for (const std::string& preset : f.preset_names()) {
      INFO(f.name << " " << preset);
      ++presets;
      int owners = 0;
      for (const BackboneFamily& g : backbone_families()) owners += g.has_preset(preset) ? 1 : 0;
      CHECK(owners == 1);
      CHECK(std::string(backbone_family_of_preset(preset).name) == f.name);
      BackboneInputs in = preset_inputs(preset);
      std::vector<std::string> overrides;
      if (f.name == std::string("transformer") && transformer_preset(preset).conditioning == "class")
        overrides.push_back("conditioning=text");  // (the trainer's data has captions)
      if (f.name == std::string("unet") && unet_preset(preset).num_classes > 0) overrides.push_back("num_classes=0");
      const BackboneSpec spec = resolve_backbone(preset, overrides, in, false);
      CHECK(spec.family == f.name);
      const BackboneCost cost = backbone_cost(spec);
      if (spec.family == "unet") {
        CHECK(cost.params == count_unet(spec.unet, {in.latent_size, in.latent_size, in.text_len}).num_params);
        CHECK(spec.unet.name == preset);
      } else {
        CHECK(cost.params == count_transformer(spec.transformer, in.text_len).num_params);
        CHECK(spec.transformer.name == preset);
      }
      CHECK(cost.params > 0);
      CHECK_THAT(backbone_summary(spec), Catch::Contains(preset));
    }
  CHECK(presets == unet_presets().size() + transformer_presets().size());
  CHECK_THROWS_WITH(backbone_family_of_preset("nosuch"), Catch::Contains("unknown preset 'nosuch'"));
  CHECK_THROWS_WITH(backbone_family("gan"), Catch::Contains("'gan'"));
}

TEST_CASE("a class-conditional preset on captioned data is refused, naming the override that fixes it") {
  for (const std::string preset : {"s2-unet-sdxl-class", "s2-dit-xl2-class"}) {
    INFO(preset);
    const std::string fix =
        backbone_family_of_preset(preset).name == std::string("unet") ? "num_classes=0" : "conditioning=text";
    CHECK_THROWS_WITH(resolve_backbone(preset, {}, preset_inputs(preset), false),
                      Catch::Contains("is class-conditional") && Catch::Contains(fix));
    CHECK_NOTHROW(resolve_backbone(preset, {fix}, preset_inputs(preset), false));
  }
}
