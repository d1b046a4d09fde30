// dtbench train's measurement on the CPU under mpirun: the parameter count against the model
// actually built, FLOPs per image against the analytic cost of the model at the latent size the
// resolution gives, the throughput figures against each other and the timing, a finite loss
// through the real sharding path; bad settings rejected naming the option.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <torch/torch.h>

#include "parallel/mpi_test_runtime.h"
#include "dtrainer/core/error.h"
#include "dtrainer/models/backbone.h"
#include "dtrainer/parallel/host_collectives.h"
#include "dtrainer/train/throughput_bench.h"

using namespace dtrainer;

namespace {

train::ThroughputConfig tiny(int64_t resolution) {
  train::ThroughputConfig c;
  c.model = "unet-tiny";
  c.micro_batch = 2;
  c.resolution = resolution;
  c.steps = 2;
  c.warmup = 1;
  c.repeats = 1;
  c.sharding = "zero2";
  c.compute_dtype = "fp32";
  c.peak_tflops = 0.5;  // given: no matmul measured
  return c;
}

models::BackboneSpec spec_at(const train::ThroughputConfig& c, int64_t latent) {
  models::BackboneInputs in = models::preset_inputs(c.model);
  in.latent_size = latent;
  return models::resolve_backbone(c.model, {}, in, false);
}

int64_t built_parameters(const models::BackboneSpec& spec) {
  int64_t n = 0;
  for (const auto& p : models::build_backbone(spec)->module().parameters()) n += p.numel();
  return n;
}

// Training FLOPs per image: 3 x (forward) x 2 FLOPs per MAC, attention products included.
double train_flops(const models::BackboneSpec& spec) {
  const models::BackboneCost cost = models::backbone_cost(spec);
  return 6.0 * static_cast<double>(cost.macs_linear_conv + cost.macs_attention);
}

}  // namespace

TEST_CASE("dtbench train on the CPU: counts match the built model, figures match the timing") {
  parallel::MpiRuntime& rt = test::mpi_runtime();
  const train::ThroughputResult a = train::measure_training_throughput(tiny(32), rt);
  const train::ThroughputResult b = train::measure_training_throughput(tiny(64), rt);
  CHECK(a.device == "cpu");
  CHECK(a.backend == std::string("mpi"));
  CHECK(a.ranks == rt.world());
  CHECK(a.latent_size == 4);  // the SD VAE's factor 8
  CHECK(b.latent_size == 8);
  CHECK(a.params == built_parameters(spec_at(tiny(32), 4)));
  CHECK(a.params == b.params);
  // The model at the latent size the resolution gives (the analytic counts equal the ops the
  // forward runs: tests/models), more work at the larger size.
  CHECK(a.flops_per_image == Approx(train_flops(spec_at(tiny(32), 4))));
  CHECK(b.flops_per_image == Approx(train_flops(spec_at(tiny(64), 8))));
  CHECK(b.flops_per_image > a.flops_per_image);
  CHECK(a.step_seconds > 0);
  CHECK(a.images_per_second == Approx(2.0 * rt.world() / a.step_seconds));
  CHECK(a.tflops_per_rank == Approx(a.flops_per_image * 2 / a.step_seconds / 1e12));
  CHECK(a.peak_tflops == 0.5);
  CHECK(a.mfu == Approx(a.tflops_per_rank / 0.5));
  CHECK(std::isfinite(a.final_loss));
  CHECK(a.final_loss > 0);
  CHECK(a.peak_memory_bytes == 0);  // (a GPU allocator's figure)
  // threads 0: the node's cores shared among its ranks (this test runs under mpirun on one node)
  CHECK(a.threads ==
        std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) / rt.local_world()));
  // the CPU clocks each phase of the step
  CHECK(a.forward_seconds > 0);
  CHECK(a.backward_seconds > 0);
  CHECK(a.optimizer_seconds > 0);
}

TEST_CASE("dtbench train --profile: one more step's ops, forward and backward, as a Chrome trace from rank 0") {
  parallel::MpiRuntime& rt = test::mpi_runtime();
  namespace fs = std::filesystem;
  // (the same path on every rank: every rank takes the profiled step, rank 0 writes it)
  const fs::path trace =
      fs::temp_directory_path() / ("dtrainer_test_profile_np" + std::to_string(rt.world()) + ".json");
  if (rt.rank() == 0) fs::remove(trace);
  parallel::barrier_host(rt.comm());
  auto c = tiny(32);
  c.profile = trace.string();
  const train::ThroughputResult r = train::measure_training_throughput(c, rt);
  CHECK(std::isfinite(r.final_loss));
  if (rt.rank() != 0) return;
  std::ifstream in(trace);
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  CHECK_THAT(text, Catch::Contains("\"aten::convolution\"") && Catch::Contains("ConvolutionBackward0") &&
                       Catch::Contains("AccumulateGrad"));
  fs::remove(trace);
}

TEST_CASE("dtbench train: bad settings are errors naming the option") {
  parallel::MpiRuntime& rt = test::mpi_runtime();
  auto c = tiny(32);
  c.micro_batch = 0;
  CHECK_THROWS_WITH(train::measure_training_throughput(c, rt), Catch::Contains("batch"));
  c = tiny(36);
  CHECK_THROWS_WITH(train::measure_training_throughput(c, rt), Catch::Contains("resolution"));
  c = tiny(32);
  c.compute_dtype = "fp16";
  CHECK_THROWS_WITH(train::measure_training_throughput(c, rt), Catch::Contains("dtype"));
  c = tiny(32);
  c.sharding = "zero9";
  CHECK_THROWS_WITH(train::measure_training_throughput(c, rt), Catch::Contains("sharding"));
  c = tiny(32);
  c.threads = -1;
  CHECK_THROWS_WITH(train::measure_training_throughput(c, rt), Catch::Contains("threads"));
  c = tiny(32);
  c.memory_limit_gib = -1;
  CHECK_THROWS_WITH(train::measure_training_throughput(c, rt), Catch::Contains("memory-limit-gib"));
  c = tiny(32);
  c.profile = "/nonexistent-folder/trace.json";  // refused before the set-up, on every rank
  CHECK_THROWS_WITH(train::measure_training_throughput(c, rt),
                    Catch::Contains("profile") && Catch::Contains("/nonexistent-folder"));
  c = tiny(32);
  c.memory_limit_gib = 80;  // a GPU's allocator cap asked of a CPU run
  CHECK_THROWS_WITH(train::measure_training_throughput(c, rt),
                    Catch::Contains("memory-limit-gib") && Catch::Contains("cpu"));
}

TEST_CASE("the matmul peak is a positive rate") {
  const double r = train::measure_matmul_tflops("cpu", "fp32", 128);
  CHECK(std::isfinite(r));
  CHECK(r > 0);
}
