// Presets, validation and field overrides of UNetSpec.
#include <catch2/catch.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/models/unet_presets.h"

using namespace dtrainer;
using namespace dtrainer::models;

TEST_CASE("all 16 presets of [S1] Table 1 exist and validate") {
  const std::vector<std::string> names = {"sd2",        "sd2-c512",   "if-xl-c512",  "if-xl-c704",
                                          "sdxl",       "sdxl-c128",  "sdxl-c192",   "sdxl-c384",
                                          "sdxl-td2",   "sdxl-td4",   "sdxl-td12",   "sdxl-td14",
                                          "sdxl-td4_4", "sdxl-td4_8", "sdxl-td4_12", "sdxl-c384-td4_12"};
  // + unet-tiny, the quickstart's model; s2-unet-sdxl and s2-unet-sdxl-class ([S2])
  REQUIRE(unet_presets().size() == names.size() + 3);
  CHECK(is_unet_preset("unet-tiny"));
  for (const auto& n : names) {
    INFO(n);
    REQUIRE(is_unet_preset(n));
    CHECK_NOTHROW(unet_preset(n).validate());
  }
  // Table rows spelled out: SDXL mid block follows the deepest level; SD2's has depth 1.
  CHECK(unet_preset("sdxl-td4_12").transformer_depth == std::vector<int64_t>{0, 4, 12});
  CHECK(unet_preset("sdxl-td4_12").mid_depth() == 12);
  CHECK(unet_preset("sd2").mid_depth() == 1);
  CHECK(unet_preset("if-xl-c704").attention_levels() == std::vector<int64_t>{0, 1, 2});
  CHECK(unet_preset("sdxl").attention_levels() == std::vector<int64_t>{1, 2});
}

TEST_CASE("unknown preset lists the known ones") {
  CHECK_THROWS_WITH(unet_preset("sdxxl"),
                    Catch::Contains("unknown UNet preset 'sdxxl'") && Catch::Contains("sdxl-td4_4"));
}

TEST_CASE("every field is overridable by key and round-trips") {
  UNetSpec s = unet_preset("sdxl");
  set_unet_field(s, "model_channels", "128");
  set_unet_field(s, "channel_mult", "1,2");
  set_unet_field(s, "transformer_depth", "1,3");
  set_unet_field(s, "num_res_blocks", "1,2");
  set_unet_field(s, "context_dim", "768");
  set_unet_field(s, "head_dim", "32");
  set_unet_field(s, "in_channels", "3");
  set_unet_field(s, "out_channels", "3");
  set_unet_field(s, "sample_size", "16");
  set_unet_field(s, "use_linear_projection", "false");
  set_unet_field(s, "num_classes", "10");
  CHECK_NOTHROW(s.validate());
  CHECK(s.mid_depth() == 3);  // -1 rule follows the override of the deepest level
  CHECK(s.res_blocks(1) == 2);
  // Copying every field by its text form onto another preset reproduces the spec exactly.
  UNetSpec copy = unet_preset("sd2");
  for (const auto& f : unet_fields())
    if (f.key != "attention_levels") set_unet_field(copy, f.key, get_unet_field(s, f.key));
  for (const auto& f : unet_fields()) {
    INFO(f.key);
    CHECK(get_unet_field(copy, f.key) == get_unet_field(s, f.key));
  }
  CHECK_THROWS_WITH(set_unet_field(s, "channels", "3"), Catch::Contains("model.channels: unknown UNet field"));
}

TEST_CASE("attention_levels rewrites transformer_depth") {
  UNetSpec s = unet_preset("sdxl");  // 0,2,10
  set_unet_field(s, "attention_levels", "0,2");
  CHECK(s.transformer_depth == std::vector<int64_t>{1, 0, 10});
  CHECK_THROWS_WITH(set_unet_field(s, "attention_levels", "3"), Catch::Contains("level 3 does not exist"));
}

TEST_CASE("inconsistent specs are rejected with the field named") {
  auto expect = [](UNetSpec s, const std::string& message) {
    INFO(message);
    CHECK_THROWS_WITH(s.validate(), Catch::Contains(message));
  };
  UNetSpec s = unet_preset("sdxl");
  s.transformer_depth = {0, 2};
  expect(s, "model.transformer_depth: has 2 entries but channel_mult has 3 levels");
  s = unet_preset("sdxl");
  s.num_res_blocks = {2, 2};
  expect(s, "model.num_res_blocks");
  s = unet_preset("sdxl");
  s.model_channels = 330;  // 330 % 32 != 0
  expect(s, "not divisible by norm_groups=32");
  s = unet_preset("sdxl");
  s.head_dim = 48;  // 640 % 48 != 0
  expect(s, "model.head_dim: level 1 has 640 channels");
  s = unet_preset("sdxl");
  s.sample_size = 30;
  expect(s, "model.sample_size");
  s = unet_preset("if-xl-c512");
  s.transformer_depth = {2, 1, 1, 0};
  expect(s, "the IF layout has one attention block per res block");
  s = unet_preset("sd2");
  s.channel_mult = {};
  expect(s, "needs at least one level");
}
