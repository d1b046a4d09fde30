// The LibTorch UNet against the analytic description: identical parameter names and shapes,
// identical op counts measured on a real forward pass, and working forward/backward.
#include <catch2/catch.hpp>

#include <map>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/op_tally.h"
#include "dtrainer/models/unet.h"
#include "dtrainer/models/unet_cost.h"
#include "models/tallied_ops.h"  // private header under test (src/ is on this test's include path)
#include "unet_test_specs.h"

using namespace dtrainer;
using namespace dtrainer::models;

namespace {

std::map<std::string, std::vector<int64_t>> module_shapes(UNet& net) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : net->named_parameters()) out[p.key()] = p.value().sizes().vec();
  return out;
}

std::map<std::string, std::vector<int64_t>> analytic_shapes(const UNetSpec& spec) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& p : count_unet(spec, {spec.sample_size, spec.sample_size, 77}).params) out[p.name] = p.shape;
  return out;
}

struct Inputs {
  torch::Tensor x, t, text, mask;
};

Inputs make_inputs(const UNetSpec& s, int64_t B, int64_t H, int64_t W, int64_t T) {
  torch::manual_seed(7);
  Inputs in;
  in.x = torch::randn({B, s.in_channels, H, W});
  in.t = torch::randint(0, 1000, {B}).to(torch::kFloat32);
  in.text = torch::randn({B, T, s.context_dim});
  in.mask = torch::ones({B, T}, torch::kBool);
  in.mask.index_put_({0, torch::indexing::Slice(T / 2, torch::indexing::None)}, false);  // sample 0 is short
  return in;
}

}  // namespace

TEST_CASE("built module has exactly the analytic parameter names and shapes, for every preset's topology") {
  for (const auto& preset : unet_presets()) {
    const UNetSpec spec = test::scaled_down(preset.name);
    INFO(preset.name << " scaled to C=" << spec.model_channels);
    torch::manual_seed(0);
    UNet net(spec);
    const auto built = module_shapes(net), analytic = analytic_shapes(spec);
    CHECK(built.size() == analytic.size());
    CHECK(built == analytic);
  }
}

TEST_CASE("full-size sdxl-c128 builds with the analytic parameter table (0.42B parameters)") {
  UNetSpec spec = unet_preset("sdxl-c128");
  torch::NoGradGuard no_grad;
  UNet net(spec);
  const auto built = module_shapes(net);
  CHECK(built == analytic_shapes(spec));
  int64_t total = 0;
  for (const auto& p : net->parameters()) total += p.numel();
  CHECK(total == count_unet(spec, {32, 32, 77}).num_params);
}

TEST_CASE("diffusers tensor names are used") {
  UNet net(test::small_sdxl());
  const auto names = module_shapes(net);
  for (const char* n :
       {"conv_in.weight", "time_embedding.linear_1.weight", "down_blocks.0.downsamplers.0.conv.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.bias",
        "mid_block.attentions.0.transformer_blocks.1.norm3.weight", "up_blocks.0.resnets.2.conv_shortcut.weight",
        "up_blocks.1.upsamplers.0.conv.weight", "conv_norm_out.weight", "conv_out.bias"}) {
    INFO(n);
    CHECK(names.count(n) == 1);
  }
  CHECK(names.count("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.bias") == 0);
  UNet if_net(test::small_if());
  const auto if_names = module_shapes(if_net);
  for (const char* n : {"down_blocks.0.attentions.0.add_k_proj.weight", "down_blocks.0.attentions.0.norm_cross.weight",
                        "down_blocks.0.downsamplers.0.conv1.weight", "mid_block.attentions.0.to_out.0.weight",
                        "up_blocks.3.resnets.3.time_emb_proj.weight"}) {
    INFO(n);
    CHECK(if_names.count(n) == 1);
  }
  // IF ResBlocks carry scale and shift: time_emb_proj is twice the block's width.
  CHECK(if_names.at("down_blocks.0.resnets.0.time_emb_proj.weight")[0] == 2 * 32);
}

TEST_CASE("forward + backward: output shape equals input shape, gradients reach every parameter") {
  for (const UNetSpec& spec : {test::small_sdxl(), test::small_if()}) {
    INFO(to_string(spec.layout));
    torch::manual_seed(1);
    UNet net(spec);
    const Inputs in = make_inputs(spec, 2, 16, 16, 7);
    const torch::Tensor y = net->forward(in.x, in.t, in.text, in.mask);
    CHECK(y.sizes() == in.x.sizes());
    {  // no mask means every token is real: the same as an all-true mask (the trainer drops those)
      torch::NoGradGuard g;
      const torch::Tensor a = net->forward(in.x, in.t, in.text),
                          b = net->forward(in.x, in.t, in.text, torch::ones_like(in.mask));
      INFO("max |difference| " << (a - b).abs().max().item<double>() << ", max |output| "
                               << b.abs().max().item<double>());
      CHECK(torch::allclose(a, b, 1e-5, 1e-5));  // (IF normalises text by a masked GroupNorm: rounding ~3e-6)
    }
    CHECK(torch::isfinite(y).all().item<bool>());
    (y * torch::randn_like(y)).sum().backward();
    for (const auto& p : net->named_parameters()) {
      INFO(p.key());
      REQUIRE(p.value().grad().defined());
      CHECK(p.value().grad().abs().sum().item<double>() > 0.0);
    }
  }
}

TEST_CASE("channels-last latents: the same prediction and gradients as NCHW, and the layout carried through") {
  // (what the trainer's channels_last does: only the input is NHWC; convolutions keep its layout)
  for (const UNetSpec& spec : {test::small_sdxl(), test::small_if()}) {
    INFO(to_string(spec.layout));
    torch::manual_seed(1);
    UNet net(spec);
    const Inputs in = make_inputs(spec, 2, 16, 8, 5);  // non-square: a transposed view would show
    const torch::Tensor nhwc = in.x.contiguous(torch::MemoryFormat::ChannelsLast);
    REQUIRE_FALSE(nhwc.is_contiguous());
    auto gradients = [&](const torch::Tensor& x) {
      net->zero_grad();
      const torch::Tensor y = net->forward(x, in.t, in.text, in.mask);
      (y * torch::linspace(-1, 1, y.numel()).view_as(y)).sum().backward();
      std::vector<torch::Tensor> g;
      for (const auto& p : net->parameters()) g.push_back(p.grad().clone());
      return std::make_pair(y.detach(), g);
    };
    const auto [y_ref, g_ref] = gradients(in.x);
    const auto [y_cl, g_cl] = gradients(nhwc);
    CHECK(y_cl.is_contiguous(torch::MemoryFormat::ChannelsLast));  // the output convolution ran channels-last
    INFO("max |difference| " << (y_cl - y_ref).abs().max().item<double>());
    CHECK(torch::allclose(y_cl, y_ref, 1e-4, 1e-5));
    // Gradients are sums over every pixel, summed in another order under NHWC, and some are zero but
    // for rounding (a convolution's bias before a GroupNorm): each tensor is compared at its own
    // scale plus a small fraction of the largest gradient of the model (how large fp32 rounding
    // gets depends on the CPU's vector width, so no fixed absolute tolerance fits every machine).
    double largest = 0;
    for (const auto& g : g_ref) largest = std::max(largest, g.abs().max().item<double>());
    for (size_t i = 0; i < g_ref.size(); ++i) {
      const double diff = (g_cl[i] - g_ref[i]).abs().max().item<double>(), scale = g_ref[i].abs().max().item<double>();
      INFO("parameter " << i << ": max |difference| " << diff << ", max |gradient| " << scale << " (model's " << largest
                        << ")");
      CHECK(diff <= 1e-3 * scale + 1e-6 * largest);
    }
  }
}

TEST_CASE("an instrumented forward pass executes exactly the analytic op counts") {
  const int64_t B = 2, H = 16, W = 8, T = 5;  // non-square, to catch h/w mix-ups
  for (UNetSpec spec :
       {test::small_sdxl(), test::small_if(), test::scaled_down("sd2"), test::scaled_down("sdxl-td4_4")}) {
    INFO(spec.name);
    spec.use_linear_projection = spec.name != "sd2";  // cover the 1x1-conv projection too
    torch::NoGradGuard no_grad;
    UNet net(spec);
    const Inputs in = make_inputs(spec, B, H, W, T);
    OpTally tally;
    {
      ScopedOpTally scope(tally);
      net->forward(in.x, in.t, in.text, in.mask);
    }
    const UNetCost c = count_unet(spec, {H, W, T});
    CHECK(tally.macs_linear_conv == B * c.total.macs_linear_conv);
    CHECK(tally.macs_attention == B * c.total.macs_attention);
    CHECK(tally.activation_elems == B * c.total.activation_elems);
    CHECK(tally.transformer_macs_linear_conv == B * c.transformer.macs_linear_conv);
    CHECK(tally.transformer_macs_attention == B * c.transformer.macs_attention);
    CHECK(tally.transformer_activation_elems == B * c.transformer.activation_elems);
  }
}

TEST_CASE("masked text tokens have no influence on the prediction; real tokens do") {
  for (const UNetSpec& spec : {test::small_sdxl(), test::small_if()}) {
    INFO(to_string(spec.layout));
    torch::NoGradGuard no_grad;
    UNet net(spec);
    const Inputs in = make_inputs(spec, 2, 16, 16, 6);  // sample 0: tokens 3..5 masked
    const torch::Tensor y = net->forward(in.x, in.t, in.text, in.mask);
    torch::Tensor text2 = in.text.clone();
    text2.index_put_({0, torch::indexing::Slice(3, 6)}, torch::randn({3, spec.context_dim}));
    CHECK(torch::allclose(net->forward(in.x, in.t, text2, in.mask), y, 1e-5, 1e-5));
    torch::Tensor text3 = in.text.clone();
    text3.index_put_({0, 0}, torch::randn({spec.context_dim}));
    CHECK_FALSE(torch::allclose(net->forward(in.x, in.t, text3, in.mask)[0], y[0], 1e-5, 1e-5));
  }
}

TEST_CASE("bad inputs are rejected with the argument named") {
  const UNetSpec spec = test::small_sdxl();
  UNet net(spec);
  const Inputs in = make_inputs(spec, 2, 16, 16, 4);
  CHECK_THROWS_WITH(net->forward(torch::randn({2, 3, 16, 16}), in.t, in.text),
                    Catch::StartsWith("x_t: expected [B, 4, H, W]"));
  CHECK_THROWS_WITH(net->forward(torch::randn({2, 4, 18, 16}), in.t, in.text), Catch::Contains("not divisible"));
  CHECK_THROWS_WITH(net->forward(in.x, torch::zeros({3}), in.text), Catch::StartsWith("t: expected [2]"));
  CHECK_THROWS_WITH(net->forward(in.x, in.t, torch::randn({2, 4, 31})), Catch::StartsWith("text: expected [2, T, 32]"));
  CHECK_THROWS_WITH(net->forward(in.x, in.t, in.text, torch::zeros({2, 4}, torch::kBool)),
                    Catch::Contains("text_mask: a sample has no real token"));
  CHECK_THROWS_WITH(net->forward(in.x, in.t, in.text, torch::ones({2, 4})),
                    Catch::StartsWith("text_mask: expected bool"));
}

TEST_CASE("class-conditional UNet: the label's table row is the one token cross-attention reads") {
  UNetSpec spec = test::scaled_down("s2-unet-sdxl-class");
  spec.num_classes = 5;
  torch::manual_seed(4);
  UNet net(spec);
  UNetSpec text_spec = spec;
  text_spec.num_classes = 0;
  UNet text_net(text_spec);
  {  // the text UNet of the same shape, with the class model's weights: every parameter but the table
    torch::NoGradGuard g;
    const auto from = net->named_parameters();
    for (auto& p : text_net->named_parameters()) p.value().copy_(from[p.key()]);
  }
  const int64_t B = 3;
  const torch::Tensor x = torch::randn({B, spec.in_channels, 16, 16}), t = torch::tensor({10.f, 500.f, 900.f});
  const torch::Tensor labels = torch::tensor({int64_t{0}, int64_t{4}, int64_t{5}});  // 5 = the null class
  const torch::Tensor y = net->forward(x, t, {}, {}, nullptr, labels);
  CHECK(y.sizes() == x.sizes());
  const torch::Tensor table = net->named_parameters()["class_embedder.embedding_table.weight"];
  CHECK(table.sizes() == torch::IntArrayRef({6, spec.context_dim}));
  {
    torch::NoGradGuard g;
    const torch::Tensor as_text = table.index_select(0, labels).unsqueeze(1);  // [B, 1, context_dim]
    const torch::Tensor y_text = text_net->forward(x, t, as_text);
    INFO("max |difference| " << (y - y_text).abs().max().item<double>());
    CHECK(torch::allclose(y.detach(), y_text, 1e-5, 1e-5));
    // another label changes the prediction of that sample only
    const torch::Tensor y2 = net->forward(x, t, {}, {}, nullptr, torch::tensor({int64_t{1}, int64_t{4}, int64_t{5}}));
    CHECK_FALSE(torch::allclose(y2[0], y[0].detach(), 1e-5, 1e-5));
    CHECK(torch::allclose(y2.narrow(0, 1, 2), y.narrow(0, 1, 2).detach(), 1e-6, 1e-6));
  }
  // Gradients reach every parameter; in the table, the rows of the labels drawn and no other.
  (y * torch::randn_like(y)).sum().backward();
  for (const auto& p : net->named_parameters()) {
    INFO(p.key());
    REQUIRE(p.value().grad().defined());
  }
  const torch::Tensor row_grad = table.grad().abs().sum(1);
  for (int64_t r = 0; r < 6; ++r) {
    INFO("row " << r);
    CHECK((row_grad[r].item<double>() > 0) == (r == 0 || r == 4 || r == 5));
  }
  // Its op counts are those of one context token.
  {
    torch::NoGradGuard g;
    OpTally tally;
    {
      ScopedOpTally scope(tally);
      net->forward(x, t, {}, {}, nullptr, labels);
    }
    const UNetCost c = count_unet(spec, {16, 16, 77});
    CHECK(tally.macs_linear_conv == B * c.total.macs_linear_conv);
    CHECK(tally.macs_attention == B * c.total.macs_attention);
  }
  // Bad inputs name the argument.
  CHECK_THROWS_WITH(net->forward(x, t, {}),
                    Catch::StartsWith("labels: a class-conditional UNet needs int64 labels [3]"));
  CHECK_THROWS_WITH(net->forward(x, t, {}, {}, nullptr, labels.to(torch::kFloat32)), Catch::StartsWith("labels:"));
  CHECK_THROWS_WITH(net->forward(x, t, {}, {}, nullptr, torch::tensor({int64_t{0}, int64_t{6}, int64_t{1}})),
                    Catch::Contains("labels must be in 0..5 (5 = the null class)"));
  CHECK_THROWS_WITH(net->forward(x, t, torch::randn({B, 1, spec.context_dim}), {}, nullptr, labels),
                    Catch::StartsWith("text: a class-conditional UNet reads labels, not text"));
  CHECK_THROWS_WITH(text_net->forward(x, t, torch::randn({B, 1, spec.context_dim}), {}, nullptr, labels),
                    Catch::StartsWith("labels: a text-conditional UNet takes no labels"));
}

TEST_CASE("masked GroupNorm equals GroupNorm on the real tokens alone") {
  torch::manual_seed(3);
  torch::nn::GroupNorm gn(torch::nn::GroupNormOptions(4, 8).eps(1e-5));
  torch::nn::init::normal_(gn->weight);
  torch::nn::init::normal_(gn->bias);
  const torch::Tensor x = torch::randn({2, 8, 6}) * 3 + 1;
  torch::NoGradGuard no_grad;
  // All-true mask: identical to the library GroupNorm.
  CHECK(torch::allclose(models::ops::masked_group_norm(gn, x, torch::ones({2, 6}, torch::kBool)), gn(x), 1e-5, 1e-5));
  // Sample 0 with 4 real tokens: its real tokens normalise exactly as a 4-token sequence would.
  torch::Tensor mask = torch::ones({2, 6}, torch::kBool);
  mask.index_put_({0, torch::indexing::Slice(4, 6)}, false);
  const torch::Tensor y = models::ops::masked_group_norm(gn, x, mask);
  const torch::Tensor ref =
      gn(x.index({torch::indexing::Slice(0, 1), torch::indexing::Slice(), torch::indexing::Slice(0, 4)}));
  CHECK(torch::allclose(y.index({torch::indexing::Slice(0, 1), torch::indexing::Slice(), torch::indexing::Slice(0, 4)}),
                        ref, 1e-5, 1e-5));
  CHECK(torch::allclose(y[1], gn(x.index({torch::indexing::Slice(1, 2)}))[0], 1e-5, 1e-5));
}
