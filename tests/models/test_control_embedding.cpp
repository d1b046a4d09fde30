// [S2] control conditioning inside the UNet: c_emb = E_h(phi_h) + gamma_c(t) E_l(phi_l).
#include <catch2/catch.hpp>

#include <map>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/op_tally.h"
#include "dtrainer/models/unet.h"
#include "dtrainer/models/unet_cost.h"
#include "unet_test_specs.h"

using namespace dtrainer;
using namespace dtrainer::models;

namespace {
UNetSpec spec_with_controls() {
  UNetSpec s = test::small_sdxl();
  s.control_conditioning = true;
  s.control_feature_dim = 16;
  return s;
}
ControlInputs controls(int64_t B, double low_weight, bool keep) {
  torch::manual_seed(21);
  ControlInputs c;
  c.high = torch::stack({torch::tensor({0.0, 16.0}), torch::tensor({8.0, 0.0}), torch::tensor({0.0, 1.0}),
                         torch::tensor({1.0, 1.5})},
                        1)
               .to(torch::kFloat32)
               .narrow(0, 0, B);
  c.low = torch::tensor({256.0, 384.0, 512.0, 512.0}).view({2, 2}).to(torch::kFloat32).narrow(0, 0, B);
  c.low_weight = torch::full({B}, low_weight);
  c.keep = torch::full({B}, keep, torch::kBool);
  return c;
}
}  // namespace

TEST_CASE("control embedding parameters match the analytic table and count") {
  const UNetSpec spec = spec_with_controls();
  UNet net(spec);
  std::map<std::string, std::vector<int64_t>> built, analytic;
  for (const auto& p : net->named_parameters()) built[p.key()] = p.value().sizes().vec();
  const UNetCost cost = count_unet(spec, {16, 16, 5});
  for (const auto& p : cost.params) analytic[p.name] = p.shape;
  CHECK(built == analytic);
  CHECK(built.at("control_embedding.high.linear_1.weight") == std::vector<int64_t>{spec.time_embed_dim(), 4 * 16});
  CHECK(built.at("control_embedding.low.linear_1.weight") == std::vector<int64_t>{spec.time_embed_dim(), 2 * 16});
  UNetSpec off = spec;
  off.control_conditioning = false;
  const int64_t temb = 4 * 32;  // time embedding width 4C
  CHECK(spec.time_embed_dim() == temb);
  CHECK(cost.num_params - count_unet(off, {16, 16, 5}).num_params ==
        (temb * 16 * 4 + temb) + (temb * temb + temb) + (temb * 16 * 2 + temb) + (temb * temb + temb));
}

TEST_CASE("controls change the prediction; gamma_c = 0 silences the low-level ones; keep = false is the null control") {
  const UNetSpec spec = spec_with_controls();
  torch::manual_seed(2);
  UNet net(spec);
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({2, 4, 16, 16}), t = torch::tensor({10.0f, 900.0f}),
                      text = torch::randn({2, 5, 32});
  const ControlInputs base = controls(2, 1.0, true);
  const torch::Tensor y = net->forward(x, t, text, {}, &base);
  ControlInputs flipped = base;
  flipped.high = base.high.clone();
  flipped.high.index_put_({torch::indexing::Slice(), 2}, 1.0 - base.high.index({torch::indexing::Slice(), 2}));
  CHECK_FALSE(torch::allclose(net->forward(x, t, text, {}, &flipped), y, 1e-5, 1e-5));

  ControlInputs off_low = controls(2, 0.0, true), off_low_other = off_low;
  off_low_other.low = off_low.low * 2;
  CHECK(torch::allclose(net->forward(x, t, text, {}, &off_low), net->forward(x, t, text, {}, &off_low_other), 1e-6,
                        1e-6));
  ControlInputs on_low_other = base;
  on_low_other.low = base.low * 2;
  CHECK_FALSE(torch::allclose(net->forward(x, t, text, {}, &on_low_other), y, 1e-5, 1e-5));

  const ControlInputs dropped = controls(2, 1.0, false);
  CHECK(torch::allclose(net->forward(x, t, text, {}, &dropped), net->forward(x, t, text), 1e-6, 1e-6));
}

TEST_CASE("an instrumented forward with controls executes the analytic op counts") {
  const UNetSpec spec = spec_with_controls();
  UNet net(spec);
  torch::NoGradGuard no_grad;
  const ControlInputs c = controls(2, 0.5, true);
  OpTally tally;
  {
    ScopedOpTally scope(tally);
    net->forward(torch::randn({2, 4, 16, 16}), torch::tensor({1.0f, 2.0f}), torch::randn({2, 5, 32}), {}, &c);
  }
  const UNetCost cost = count_unet(spec, {16, 16, 5});
  CHECK(tally.macs_linear_conv == 2 * cost.total.macs_linear_conv);
  CHECK(tally.activation_elems == 2 * cost.total.activation_elems);
}

TEST_CASE("controls are validated") {
  UNet plain(test::small_sdxl());
  const ControlInputs c = controls(2, 1.0, true);
  const torch::Tensor x = torch::randn({2, 4, 16, 16}), t = torch::zeros({2}), text = torch::randn({2, 5, 32});
  CHECK_THROWS_WITH(plain->forward(x, t, text, {}, &c), Catch::Contains("built without control_conditioning"));
  UNet net(spec_with_controls());
  ControlInputs bad = c;
  bad.low = torch::zeros({2, 3});
  CHECK_THROWS_WITH(net->forward(x, t, text, {}, &bad), Catch::Contains("controls.low: expected shape [2, 2]"));
}
