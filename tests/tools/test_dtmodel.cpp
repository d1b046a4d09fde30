// dtmodel as a user runs it: JSON contract, consistency with the library, errors and exit codes.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "run_process.h"

#include "dtrainer/models/unet_cost.h"
#include "dtrainer/models/transformer_cost.h"
#include "dtrainer/models/unet_presets.h"

using dtrainer::models::count_transformer;
using dtrainer::models::count_unet;
using dtrainer::models::transformer_preset;
using dtrainer::models::transformer_presets;
using dtrainer::models::unet_preset;
using dtrainer::models::unet_presets;

namespace {
struct Result {
  int status;
  std::string out;
};
Result run(const std::string& args) {
  const auto r = dtrainer::test::run_process(std::string(DTMODEL_PATH) + " " + args);
  return {r.status, r.out};
}
}  // namespace

TEST_CASE("dtmodel list --json has every preset with the required keys") {
  const Result r = run("list --json");
  REQUIRE(r.status == 0);
  const auto arr = nlohmann::json::parse(r.out);
  REQUIRE(arr.size() == unet_presets().size() + transformer_presets().size());
  for (const auto& o : arr) {
    for (const char* key : {"name", "params", "macs_linear_conv", "flops", "macs_transformer"}) {
      INFO(o.dump() << " key " << key);
      CHECK(o.contains(key));
    }
    const std::string name = o["name"];
    if (o["family"] == "unet") {
      const auto c = count_unet(unet_preset(name), {32, 32, 77});
      CHECK(o["params"].get<int64_t>() == c.num_params);
      CHECK(o["flops"].get<int64_t>() == c.total.flops());
    } else {
      const auto spec = transformer_preset(name);
      const auto c = count_transformer(spec, spec.family == dtrainer::models::TransformerFamily::kDiT ? 0 : 77);
      CHECK(o["params"].get<int64_t>() == c.num_params);
      CHECK(o["flops"].get<int64_t>() == c.total.flops());
    }
  }
}

TEST_CASE("dtmodel describe covers the transformers, with --set overrides") {
  const Result r = run("describe pixart-h1152-d28 --json --set depth=14");
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  auto spec = transformer_preset("pixart-h1152-d28");
  spec.depth = 14;
  CHECK(j["params"].get<int64_t>() == count_transformer(spec, 77).num_params);
  CHECK(j["fields"]["caption_mlp"] == true);
  CHECK(run("describe mmdit-xl2 --set depht=3").status == 2);
}

TEST_CASE("dtmodel describe applies overrides and resolution") {
  const Result r = run("describe sdxl --json --resolution 512 --transformer-depth 0,4,4 --context-dim 768");
  REQUIRE(r.status == 0);
  const auto o = nlohmann::json::parse(r.out);
  auto spec = unet_preset("sdxl-td4_4");
  spec.context_dim = 768;
  const auto c = count_unet(spec, {64, 64, 77});
  CHECK(o["params"].get<int64_t>() == c.num_params);
  CHECK(o["macs_linear_conv"].get<int64_t>() == c.total.macs_linear_conv);
  CHECK(o["macs_transformer"].get<int64_t>() == c.transformer.macs_linear_conv + c.transformer.macs_attention);
  CHECK(o["latent"] == nlohmann::json::array({4, 64, 64}));
  CHECK(o["stages"].size() == c.stages.size());
  CHECK(o["fields"]["transformer_depth"] == "0,4,4");
}

TEST_CASE("dtmodel describe prints a readable report") {
  const Result r = run("describe sd2");
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("parameters          865910724"));
  CHECK_THAT(r.out, Catch::Contains("macs_linear_conv") && Catch::Contains("mid_block"));
}

TEST_CASE("dtmodel errors name the problem and exit non-zero") {
  Result r = run("describe nosuch");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("unknown UNet preset 'nosuch'"));
  r = run("describe sdxl --channel-mult 1,2");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("model.transformer_depth: has 3 entries but channel_mult has 2 levels"));
  r = run("describe sdxl --resolution 100");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("--resolution"));
  r = run("describe sdxl --model-channels abc");
  CHECK(r.status != 0);
  r = run("");
  CHECK(r.status != 0);
}
