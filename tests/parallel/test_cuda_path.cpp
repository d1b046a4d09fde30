// The CUDA path against the host path it must equal: the fused device AdamW against the host
// update, sharded training of a small UNet on the GPU (NCCL communicator, world size 1, and no
// communicator) against the same steps on the CPU, the on-device skip of a non-finite step, and
// bf16 compute against fp32. Exits 77 (skipped) where LibTorch sees no CUDA device.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <limits>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "dtrainer/parallel/adamw.h"
#include "dtrainer/parallel/local_device.h"
#include "dtrainer/parallel/mpi_runtime.h"
#include "dtrainer/parallel/sharded_params.h"
#include "dtrainer/models/unet.h"
#include "models/unet_test_specs.h"
#include "mpi_test_runtime.h"

using namespace dtrainer;
using namespace dtrainer::parallel;

namespace {

const torch::Device kGpu(torch::kCUDA, 0);

models::UNetSpec tiny_spec() {
  models::UNetSpec s = test::scaled_down("sdxl-c128");
  s.transformer_depth = {0, 1, 1};
  s.sample_size = 8;
  return s;
}

double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor x = a.to(torch::kCPU, torch::kFloat64), y = b.to(torch::kCPU, torch::kFloat64);
  return ((x - y).norm() / y.norm().clamp_min(1e-30)).item<double>();
}

// Trains a fresh tiny UNet (seeded) for `steps` AdamW steps on `device`; returns its flat parameters.
torch::Tensor train_tiny(const torch::Device& device, ShardingStrategy strategy, Communicator* comm,
                         torch::ScalarType dtype, int steps, std::vector<double>* norms = nullptr) {
  torch::manual_seed(11);
  models::UNet net(tiny_spec());
  net->to(device);
  ShardingConfig sc;
  sc.strategy = strategy;
  sc.adamw = {1e-3, 0.9, 0.95, 1e-4, 0.03};
  sc.compute_dtype = dtype;
  ShardedParameters sharded(*net, comm, sc);
  for (int step = 0; step < steps; ++step) {
    torch::manual_seed(1000 + step);  // the same batch on either device (drawn on the CPU)
    const torch::Tensor x = torch::randn({4, 4, 8, 8}), t = torch::randint(0, 1000, {4}).to(torch::kFloat32),
                        text = torch::randn({4, 5, 32}), target = torch::randn({4, 4, 8, 8});
    const torch::Tensor pred =
        net->forward(x.to(device, dtype), t.to(device), text.to(device, dtype)).to(torch::kFloat32);
    sharded.backward(torch::mse_loss(pred, target.to(device)));
    const torch::Tensor norm = sharded.step_async(0.5);  // clipping active: the norm is ~1
    if (norms) norms->push_back(norm.item<double>());
  }
  CHECK(sharded.steps() == steps);
  std::vector<torch::Tensor> flat;
  for (size_t u = 0; u < sharded.num_units(); ++u) flat.push_back(sharded.gather_unit(u).to(torch::kCPU));
  return torch::cat(flat);
}

}  // namespace

TEST_CASE("the fused device AdamW equals the host update, and skips on the device") {
  const AdamWConfig c{1e-3, 0.9, 0.95, 1e-6, 0.03};
  torch::manual_seed(3);
  for (int64_t n : {1, 1000, 4099}) {
    INFO(n << " elements");
    torch::Tensor p = torch::randn({n}), m = torch::zeros({n}), v = torch::zeros({n});
    torch::Tensor gp = p.to(kGpu), gm = m.to(kGpu), gv = v.to(kGpu),
                  copy = torch::empty({n}, torch::TensorOptions(kGpu).dtype(torch::kBFloat16));
    torch::Tensor count = torch::zeros({1}, torch::TensorOptions(kGpu).dtype(torch::kFloat32));
    for (int step = 1; step <= 3; ++step) {
      const torch::Tensor g = torch::randn({n});
      const double divisor = 0.5 * step;  // grads are divided by it: the host update scales by its inverse
      adamw_step(p, g, m, v, step, c, 1.0 / divisor);
      adamw_step_on_device({gp}, {g.to(kGpu)}, {gm}, {gv}, count, c, torch::full({1}, divisor, count.options()),
                           torch::zeros({1}, count.options()), {copy});
    }
    CHECK(rel_diff(gp, p) < 1e-6);
    CHECK(rel_diff(gm, m) < 1e-6);
    CHECK(rel_diff(gv, v) < 1e-6);
    CHECK(torch::equal(copy.cpu(), gp.cpu().to(torch::kBFloat16)));
    CHECK(count.item<float>() == 3.0f);
    // skip = 1: nothing moves, the count stays
    const torch::Tensor before = gp.clone(), m_before = gm.clone();
    adamw_step_on_device({gp}, {torch::randn({n}, count.options())}, {gm}, {gv}, count, c,
                         torch::ones({1}, count.options()), torch::ones({1}, count.options()), {});
    CHECK(torch::equal(gp, before));
    CHECK(torch::equal(gm, m_before));
    CHECK(count.item<float>() == 3.0f);
  }
}

TEST_CASE("activation checkpointing on the GPU equals plain backward") {
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  // One step, no update: the gradient norm with and without recomputation, on the GPU.
  auto norm_of = [](bool checkpointing) {
    torch::manual_seed(11);
    models::UNet net(tiny_spec());
    net->to(kGpu);
    ShardingConfig sc;
    sc.activation_checkpointing = checkpointing;
    ShardedParameters sharded(*net, nullptr, sc);
    torch::manual_seed(1000);
    const torch::Tensor x = torch::randn({4, 4, 8, 8}), t = torch::randint(0, 1000, {4}).to(torch::kFloat32),
                        text = torch::randn({4, 5, 32}), target = torch::randn({4, 4, 8, 8});
    sharded.backward(torch::mse_loss(net->forward(x.to(kGpu), t.to(kGpu), text.to(kGpu)), target.to(kGpu)));
    return sharded.step(1e9);
  };
  const double plain = norm_of(false), recomputed = norm_of(true);
  std::printf("gradient norm on the GPU: plain %.7f, recomputed %.7f\n", plain, recomputed);
  CHECK(recomputed == Approx(plain).epsilon(1e-5));
}

TEST_CASE("sharded training on the GPU equals the same steps on the CPU") {
  // fp32 everywhere: no TF32 in cuBLAS or cuDNN for this comparison.
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  MpiRuntime& rt = test::mpi_runtime();
  auto nccl = make_communicator(rt, kGpu);
  REQUIRE(std::string(nccl->backend()) == "nccl");
  for (ShardingStrategy s : {ShardingStrategy::kReplicate, ShardingStrategy::kZero2, ShardingStrategy::kZero3}) {
    for (Communicator* comm : {nccl.get(), static_cast<Communicator*>(nullptr)}) {
      INFO(sharding_strategy_name(s) << (comm ? " over NCCL" : " without a communicator"));
      std::vector<double> cpu_norms, gpu_norms;
      const torch::Tensor cpu = train_tiny(torch::kCPU, s, nullptr, torch::kFloat32, 3, &cpu_norms);
      const torch::Tensor gpu = train_tiny(kGpu, s, comm, torch::kFloat32, 3, &gpu_norms);
      const double d = rel_diff(gpu, cpu);
      std::printf("%s %s: parameters rel diff %.3g; first norms gpu %.6f cpu %.6f\n", sharding_strategy_name(s),
                  comm ? "nccl" : "none", d, gpu_norms[0], cpu_norms[0]);
      CHECK(d < 1e-5);
      for (size_t i = 0; i < cpu_norms.size(); ++i) CHECK(gpu_norms[i] == Approx(cpu_norms[i]).epsilon(1e-4));
    }
  }
  // bf16 compute: the update it makes is the fp32 update to within bf16 rounding.
  torch::manual_seed(11);
  models::UNet init(tiny_spec());
  std::vector<torch::Tensor> p0;
  for (const auto& u : init->units())
    for (const auto& p : u.parameters) p0.push_back(p.detach().reshape({-1}));
  const torch::Tensor start = torch::cat(p0);
  const torch::Tensor fp32 = train_tiny(kGpu, ShardingStrategy::kZero3, nccl.get(), torch::kFloat32, 3);
  const torch::Tensor bf16 = train_tiny(kGpu, ShardingStrategy::kZero3, nccl.get(), torch::kBFloat16, 3);
  const double d = rel_diff(bf16 - start, fp32 - start);
  INFO("relative difference of the bf16 and fp32 updates: " << d);
  CHECK(d < 0.1);
  CHECK(rel_diff(bf16, fp32) > 0);  // (it did compute in bf16)
}

TEST_CASE("a non-finite gradient skips the step on the device, and the next step runs") {
  torch::manual_seed(11);
  models::UNet net(tiny_spec());
  net->to(kGpu);
  ShardingConfig sc;
  sc.ema_decay = 0.9;
  ShardedParameters sharded(*net, nullptr, sc);
  auto flat = [&] {
    std::vector<torch::Tensor> f;
    for (size_t u = 0; u < sharded.num_units(); ++u) f.push_back(sharded.gather_unit(u));
    return torch::cat(f);
  };
  auto ema = [&] {
    std::vector<torch::Tensor> f;
    for (size_t u = 0; u < sharded.num_units(); ++u) f.push_back(sharded.gather_unit(u, true));
    return torch::cat(f);
  };
  const torch::Tensor x = torch::randn({2, 4, 8, 8}, kGpu), t = torch::full({2}, 10.0f, x.options()),
                      text = torch::randn({2, 5, 32}, x.options());
  const torch::Tensor before = flat(), ema_before = ema();
  sharded.backward(net->forward(x, t, text).mean() * std::numeric_limits<float>::quiet_NaN());
  const torch::Tensor norm = sharded.step_async();
  CHECK(norm.is_cuda());
  CHECK(std::isnan(norm.item<double>()));
  CHECK(torch::equal(flat(), before));
  CHECK(torch::equal(ema(), ema_before));
  CHECK(sharded.steps() == 0);
  sharded.backward(net->forward(x, t, text).pow(2).mean());
  CHECK(std::isfinite(sharded.step()));
  CHECK(sharded.steps() == 1);
  CHECK_FALSE(torch::equal(flat(), before));
  CHECK_FALSE(torch::equal(ema(), ema_before));
}

int main(int argc, char** argv) {
  MpiRuntime& rt = test::mpi_runtime();
  if (!torch::cuda::is_available()) {
    if (rt.rank() == 0) std::printf("no CUDA device visible to LibTorch: the CUDA path cannot run here (skipped)\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
