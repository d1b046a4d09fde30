// load_weights: a weights file into a module's parameters, all or nothing.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "data/data_test_util.h"

#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/core/error.h"

using namespace dtrainer;
using namespace dtrainer::ckpt;

namespace {

struct TinyImpl : torch::nn::Module {
  TinyImpl(int64_t hidden) {
    proj = register_module("proj", torch::nn::Linear(3, hidden));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden})));
  }
  torch::nn::Linear proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(Tiny);

// The module's parameters as a weights file, each tensor stored as `dtype`.
void save(torch::nn::Module& m, const std::string& path, torch::ScalarType dtype = torch::kFloat32,
          const std::string& extra = "") {
  std::vector<SafetensorsEntry> entries;
  for (const auto& p : m.named_parameters()) entries.push_back({p.key(), dtype, p.value().sizes().vec()});
  if (!extra.empty()) entries.push_back({extra, dtype, {1}});
  SafetensorsWriter w(path, entries, {});
  for (const auto& p : m.named_parameters()) w.write(p.key(), p.value().detach());
  if (!extra.empty()) w.write(extra, torch::zeros({1}));
  w.commit();
}

bool same_parameters(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  for (const auto& p : pa)
    if (!torch::equal(p.value(), pb[p.key()])) return false;
  return true;
}

}  // namespace

TEST_CASE("weights saved from one module load into another of the same shape, exactly") {
  const std::string dir = test::scratch_dir("weights-load");
  torch::manual_seed(1);
  Tiny source(4);
  torch::manual_seed(2);
  Tiny target(4);
  REQUIRE_FALSE(same_parameters(*source, *target));
  save(*source, dir + "/w.safetensors");
  load_weights(dir + "/w.safetensors", *target);
  CHECK(same_parameters(*source, *target));
  CHECK(target->proj->weight.requires_grad());  // still trainable parameters

  // A half-precision file converts to the module's fp32.
  save(*source, dir + "/w16.safetensors", torch::kBFloat16);
  torch::manual_seed(3);
  Tiny t16(4);
  load_weights(dir + "/w16.safetensors", *t16);
  CHECK(torch::equal(t16->proj->weight, source->proj->weight.to(torch::kBFloat16).to(torch::kFloat32)));
}

TEST_CASE("a weights file of another model is refused by name and changes nothing") {
  const std::string dir = test::scratch_dir("weights-refuse");
  torch::manual_seed(1);
  Tiny wide(5), target(4);
  const torch::Tensor before = target->proj->weight.clone();
  save(*wide, dir + "/wide.safetensors");
  CHECK_THROWS_WITH(load_weights(dir + "/wide.safetensors", *target),
                    Catch::Contains("wide.safetensors") && Catch::Contains("tensor 'proj.weight' has shape [5, 3]"));
  CHECK(torch::equal(target->proj->weight, before));

  save(*target, dir + "/extra.safetensors", torch::kFloat32, "head.bias");
  CHECK_THROWS_WITH(load_weights(dir + "/extra.safetensors", *target),
                    Catch::Contains("tensor 'head.bias' is not a parameter"));

  torch::nn::Linear only(3, 4);  // has weight and bias, but not the norm's
  SafetensorsWriter w(dir + "/partial.safetensors", {{"proj.weight", torch::kFloat32, {4, 3}}}, {});
  w.write("proj.weight", torch::zeros({4, 3}));
  w.commit();
  CHECK_THROWS_WITH(load_weights(dir + "/partial.safetensors", *target), Catch::Contains("has no tensor 'proj.bias'"));
  CHECK(torch::equal(target->proj->weight, before));
}
