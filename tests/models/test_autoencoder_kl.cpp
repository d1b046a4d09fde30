// The SD / SDXL autoencoder against diffusers' AutoencoderKL: outputs of a seeded small model
// (fixtures made by tests/models/fixtures/make_encoder_fixtures.py from diffusers 0.21.4), the
// parameter names and shapes of the real SDXL VAE configuration, and the loader's errors.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "../data/data_test_util.h"
#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/models/autoencoder_kl.h"

using namespace dtrainer;
using namespace dtrainer::models;
namespace fs = std::filesystem;

namespace {

const std::string kFixture = std::string(DT_FIXTURES) + "/autoencoder_kl";

torch::Tensor reference(const std::string& name) {
  static const ckpt::SafetensorsFile file(kFixture + "/reference.safetensors");
  return file.read(name);
}

void check_close(const torch::Tensor& got, const torch::Tensor& want, double tol = 1e-4) {
  REQUIRE(got.sizes() == want.sizes());
  const double diff = (got.to(torch::kFloat32) - want).abs().max().item<double>();
  INFO("max |difference| " << diff << ", max |reference| " << want.abs().max().item<double>());
  CHECK(diff < tol);
}

// A copy of the fixture folder whose weights pass through `edit` (name -> name, or "" to drop;
// tensor edited in place), optionally with another config.json.
std::string edited_copy(const std::string& name, const std::function<std::string(const std::string&)>& rename,
                        const std::function<torch::Tensor(const std::string&, torch::Tensor)>& edit = nullptr) {
  const std::string dir = test::scratch_dir(name);
  fs::copy_file(kFixture + "/config.json", dir + "/config.json");
  const ckpt::SafetensorsFile in(kFixture + "/diffusion_pytorch_model.safetensors");
  std::vector<ckpt::SafetensorsEntry> entries;
  std::vector<torch::Tensor> values;
  for (const auto& e : in.entries()) {
    const std::string n = rename(e.name);
    if (n.empty()) continue;
    torch::Tensor v = in.read(e.name);
    if (edit) v = edit(e.name, v);
    ckpt::SafetensorsEntry out = e;
    out.name = n;
    out.shape = v.sizes().vec();
    entries.push_back(out);
    values.push_back(v);
  }
  ckpt::SafetensorsWriter w(dir + "/diffusion_pytorch_model.safetensors", entries, {});
  for (size_t i = 0; i < entries.size(); ++i) w.write(entries[i].name, values[i]);
  w.commit();
  return dir;
}

std::string same(const std::string& n) { return n; }

}  // namespace

TEST_CASE("AutoencoderKL matches diffusers: moments, scaled latents (mean and sampled), decoded images") {
  AutoencoderKL vae = load_autoencoder(kFixture);
  CHECK(vae->config().scaling_factor == Approx(0.13025));
  CHECK(vae->config().block_out_channels == std::vector<int64_t>{8, 16, 16});
  torch::NoGradGuard g;
  const torch::Tensor images = reference("images");
  const auto [mean, logvar] = vae->encode_moments(images);
  check_close(mean, reference("mean"));
  check_close(logvar, reference("logvar"));
  check_close(vae->encode(images), reference("latents"));
  check_close(vae->encode(images, reference("noise")), reference("latents_sampled"));
  check_close(vae->decode(reference("latents")), reference("decoded"));
  // f = 4: a 24 x 16 image has 6 x 4 latents
  CHECK(mean.sizes() == torch::IntArrayRef({2, 4, 6, 4}));
}

TEST_CASE("AutoencoderKL in bf16 stays near the fp32 reference") {
  AutoencoderKL vae = load_autoencoder(kFixture, torch::kBFloat16);
  CHECK(vae->parameters().front().scalar_type() == torch::kBFloat16);
  torch::NoGradGuard g;
  const torch::Tensor z = vae->encode(reference("images"));
  CHECK(z.scalar_type() == torch::kBFloat16);
  const torch::Tensor want = reference("latents");
  const double rel = (z.to(torch::kFloat32) - want).norm().item<double>() / want.norm().item<double>();
  INFO("relative error " << rel);
  CHECK(rel < 0.05);
  CHECK(rel > 0);  // (it did compute in bf16)
}

TEST_CASE("the real SDXL VAE configuration has diffusers' parameter names and shapes") {
  const nlohmann::json layout =
      nlohmann::json::parse(read_file(std::string(DT_FIXTURES) + "/autoencoder_kl_sdxl_layout.json"))["tensors"];
  AutoencoderKL vae(sd_vae_config(0.13025));
  std::map<std::string, std::vector<int64_t>> built, want;
  int64_t params = 0;
  for (const auto& p : vae->named_parameters()) {
    built[p.key()] = p.value().sizes().vec();
    params += p.value().numel();
  }
  for (const auto& [name, shape] : layout.items()) want[name] = shape.get<std::vector<int64_t>>();
  CHECK(built.size() == want.size());
  CHECK(built == want);
  CHECK(params == 83653863);  // SDXL's (and SD's) VAE: 83.65 M parameters
}

TEST_CASE("a file with the mid-block attention's pre-2023 names (query, key, value, proj_attn) loads alike") {
  const std::string dir = edited_copy("vae-old-names", [](const std::string& n) {
    for (const auto& [now, then] : {std::pair<std::string, std::string>{".to_q.", ".query."},
                                    {".to_k.", ".key."},
                                    {".to_v.", ".value."},
                                    {".to_out.0.", ".proj_attn."}}) {
      const size_t at = n.find(now);
      if (at != std::string::npos) return n.substr(0, at) + then + n.substr(at + now.size());
    }
    return n;
  });
  AutoencoderKL vae = load_autoencoder(dir);
  torch::NoGradGuard g;
  check_close(vae->encode(reference("images")), reference("latents"));
}

TEST_CASE("bad autoencoder folders and inputs are errors naming the file, the field or the tensor") {
  const std::string weights = "/diffusion_pytorch_model.safetensors";
  CHECK_THROWS_WITH(load_autoencoder("/nonexistent/vae"), Catch::Contains("/nonexistent/vae: is not a folder"));
  {
    const std::string dir = test::scratch_dir("vae-no-config");
    CHECK_THROWS_WITH(load_autoencoder(dir), Catch::Contains("config.json: not found"));
  }
  {
    const std::string dir = test::scratch_dir("vae-no-weights");
    fs::copy_file(kFixture + "/config.json", dir + "/config.json");
    std::ofstream(dir + "/diffusion_pytorch_model.bin") << "pickle";
    CHECK_THROWS_WITH(load_autoencoder(dir),
                      Catch::Contains(weights + ": not found") && Catch::Contains("diffusion_pytorch_model.bin"));
  }
  {  // a tensor missing
    const std::string dir = edited_copy("vae-missing", [](const std::string& n) {
      return n == "decoder.up_blocks.1.resnets.2.conv2.bias" ? std::string() : n;
    });
    CHECK_THROWS_WITH(
        load_autoencoder(dir),
        Catch::Contains(weights) && Catch::Contains("has no tensor 'decoder.up_blocks.1.resnets.2.conv2.bias'"));
  }
  {  // a tensor of another shape
    const std::string dir = edited_copy("vae-shape", same, [](const std::string& n, torch::Tensor v) {
      return n == "encoder.mid_block.attentions.0.to_q.weight" ? v.unsqueeze(-1).unsqueeze(-1) : v;
    });
    CHECK_THROWS_WITH(load_autoencoder(dir), Catch::Contains("tensor 'encoder.mid_block.attentions.0.to_q.weight' has "
                                                             "shape [16, 16, 1, 1], the model's is [16, 16]"));
  }
  {  // a tensor the architecture has no place for
    const std::string dir = edited_copy("vae-extra", [](const std::string& n) {
      return n == "quant_conv.bias" ? std::string("encoder.extra.bias") : n;
    });
    CHECK_THROWS_WITH(load_autoencoder(dir), Catch::Contains("'encoder.extra.bias' is not a parameter of the model"));
  }
  {  // a config this implementation does not have, and a broken one
    const std::string dir = edited_copy("vae-gelu", same);
    nlohmann::json c = nlohmann::json::parse(read_file(dir + "/config.json"));
    c["act_fn"] = "gelu";
    write_file_atomic(dir + "/config.json", c.dump());
    CHECK_THROWS_WITH(load_autoencoder(dir), Catch::Contains("config.json: act_fn: is \"gelu\"; only silu"));
    c["act_fn"] = "silu";
    c["block_out_channels"] = {8, 16};
    write_file_atomic(dir + "/config.json", c.dump());
    CHECK_THROWS_WITH(load_autoencoder(dir), Catch::Contains("down_block_types: expected one block type per entry"));
    write_file_atomic(dir + "/config.json", "{\"block_out_channels\": [8, 16,");
    CHECK_THROWS_WITH(load_autoencoder(dir), Catch::Contains("config.json: is not valid JSON"));
  }
  AutoencoderKL vae = load_autoencoder(kFixture);
  torch::NoGradGuard g;
  CHECK_THROWS_WITH(vae->encode(torch::zeros({1, 3, 10, 16})),
                    Catch::StartsWith("images: expected [B, 3, H, W] with "
                                      "H, W multiples of 4, got [1, 3, 10, 16]"));
  CHECK_THROWS_WITH(vae->decode(torch::zeros({1, 3, 4, 4})), Catch::StartsWith("latents: expected [B, 4, h, w]"));
  CHECK_THROWS_WITH(vae->encode(reference("images"), torch::zeros({1})), Catch::StartsWith("noise: expected"));
}
