// Activation checkpointing through the unit runner: a UNet whose every unit is recomputed in
// backward yields the same output and the same gradients (parameters and input) as the plain
// model, and the hooks see one forward run and one recomputation per unit.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "dtrainer/models/checkpointed_unit.h"
#include "dtrainer/models/unet.h"
#include "unet_test_specs.h"

using namespace dtrainer;

namespace {
struct CountingRunner : models::UnitRunner, models::CheckpointHooks {
  std::vector<int> runs, recomputes;
  explicit CountingRunner(size_t n) : runs(n), recomputes(n) {}
  std::vector<torch::Tensor> run(size_t index, const Fn& fn, const std::vector<torch::Tensor>& inputs) override {
    return models::run_checkpointed(index, fn, inputs, this);
  }
  void before_run(size_t unit, bool recompute) override { ++(recompute ? recomputes : runs)[unit]; }
};
// |a - b| / max(|a|, floor): gradients summed in a different order (temb's, over the units)
// differ in the last fp32 bits. Some gradients are zero in exact arithmetic — a per-channel bias
// ahead of a GroupNorm with one channel per group: ~1e-6 here, against ~100 for their weights) and
// only rounding noise: the floor (1% of the whole gradient's norm) keeps noise-vs-noise
// comparisons out while a real discrepancy of that size would still fail.
double relative_difference(const torch::Tensor& a, const torch::Tensor& b, double floor) {
  return (a - b).norm().item<double>() / std::max(a.norm().item<double>(), floor);
}
}  // namespace

TEST_CASE("a checkpointed UNet has the plain UNet's output and gradients") {
  models::UNetSpec spec = test::scaled_down("sdxl-c128");
  spec.sample_size = 8;
  torch::manual_seed(5);
  models::UNet plain(spec);
  torch::manual_seed(5);
  models::UNet ckpt(spec);
  CountingRunner runner(ckpt->units().size());
  ckpt->set_unit_runner(&runner);

  torch::manual_seed(6);
  const torch::Tensor x = torch::randn({2, 4, 8, 8});
  const torch::Tensor t = torch::tensor({10.0f, 700.0f});
  const torch::Tensor text = torch::randn({2, 5, spec.context_dim});
  const torch::Tensor mask = torch::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}).view({2, 5}).to(torch::kBool);
  const torch::Tensor xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
  const torch::Tensor ya = plain->forward(xa, t, text, mask), yb = ckpt->forward(xb, t, text, mask);
  CHECK(torch::equal(ya, yb));
  const torch::Tensor w = torch::randn_like(ya);
  (ya * w).sum().backward();
  (yb * w).sum().backward();
  double total = 0;
  for (const auto& p : plain->parameters()) total += p.grad().pow(2).sum().item<double>();
  const double floor = 1e-2 * std::sqrt(total);
  CHECK(relative_difference(xa.grad(), xb.grad(), 0) < 1e-5);
  const auto pa = plain->named_parameters(), pb = ckpt->named_parameters();
  for (const auto& p : pa) {
    INFO(p.key());
    REQUIRE(pb[p.key()].grad().defined());
    CHECK(relative_difference(p.value().grad(), pb[p.key()].grad(), floor) < 1e-5);
  }
  for (size_t u = 0; u < runner.runs.size(); ++u) {
    INFO("unit " << ckpt->units()[u].name);
    CHECK(runner.runs[u] == 1);
    CHECK(runner.recomputes[u] == 1);
  }
}

TEST_CASE("UNet units cover every parameter exactly once, in forward order") {
  models::UNetSpec spec = test::scaled_down("sdxl-c128");
  spec.control_conditioning = true;
  models::UNet net(spec);
  std::set<const c10::TensorImpl*> seen;
  size_t count = 0;
  for (const auto& u : net->units())
    for (const auto& p : u.parameters) {
      seen.insert(p.unsafeGetTensorImpl());
      ++count;
    }
  CHECK(count == net->parameters().size());
  CHECK(seen.size() == count);
  const auto units = net->units();
  CHECK(units.front().name == "time_embedding");
  CHECK(units[1].name == "conv_in");
  CHECK(units[2].name == "down_blocks.0.resnets.0");
  CHECK(units.back().name == "conv_out");
}
