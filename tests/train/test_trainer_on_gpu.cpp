// The trainer on a GPU against the same run on the CPU (1 rank each: the same data, seed and
// batches, so the same steps up to TF32 / cuDNN rounding), a GPU checkpoint resumed on the CPU,
// --device auto choosing the GPU, and zero3 over NCCL in bf16 training to finite losses with a
// sample grid; two ranks on one GPU refused. Exits 77 (skipped) where LibTorch sees no CUDA device.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "train/dtrainer_runner.h"

using namespace dtrainer;
using test::run;
using test::slurp;
namespace fs = std::filesystem;

namespace {

double loss_at(const std::map<int64_t, nlohmann::json>& r, int64_t step) { return r.at(step).at("loss").get<double>(); }

}  // namespace

TEST_CASE("a GPU run follows the CPU run step for step, and its checkpoint resumes on the CPU") {
  const std::string cpu = test::scratch_dir("cpu"), gpu = test::scratch_dir("gpu"),
                    resumed = test::scratch_dir("resumed");
  const std::string args = "--steps 12 --ckpt-every 6 --keep-ckpts 2 --run-dir ";
  REQUIRE(run(1, args + cpu, cpu + ".log") == 0);
  INFO(slurp(gpu + ".log"));
  REQUIRE(run(1, args + gpu, gpu + ".log", test::kTinyUNet, "cuda") == 0);
  const auto c = test::training_records(cpu), g = test::training_records(gpu);
  REQUIRE(c.size() == 12);
  REQUIRE(g.size() == 12);
  // Step 1: identical weights and batch, so only rounding differs (cuDNN may use TF32).
  CHECK(loss_at(g, 1) == Approx(loss_at(c, 1)).epsilon(5e-3));
  for (int64_t s = 2; s <= 12; ++s) {
    INFO("step " << s);
    CHECK(loss_at(g, s) == Approx(loss_at(c, s)).epsilon(3e-2));
    CHECK(g.at(s).at("grad_norm").get<double>() == Approx(c.at(s).at("grad_norm").get<double>()).epsilon(5e-2));
  }
  CHECK(g.at(12).at("max_device_memory_bytes").get<double>() > 0);
  CHECK_FALSE(c.at(12).contains("max_device_memory_bytes"));
  CHECK(fs::exists(gpu + "/samples/step_00000012.png"));

  // The GPU's step-6 checkpoint continued on the CPU: steps 7-12 follow the CPU run.
  INFO(slurp(resumed + ".log"));
  REQUIRE(run(1, "--steps 12 --resume " + gpu + "/ckpt/step_00000006 --run-dir " + resumed, resumed + ".log") == 0);
  const auto r = test::training_records(resumed);
  for (int64_t s = 7; s <= 12; ++s) {
    INFO("resumed step " << s);
    CHECK(loss_at(r, s) == Approx(loss_at(c, s)).epsilon(3e-2));
  }
}

TEST_CASE("--device auto takes the GPU; zero3 over NCCL in bf16 trains to finite losses") {
  const std::string dir = test::scratch_dir("auto");
  const int rc =
      run(1, "--steps 6 --sharding zero3 --compute-dtype bf16 --run-dir " + dir, dir + ".log", test::kTinyUNet, "auto");
  const std::string log = slurp(dir + ".log");
  INFO(log);
  REQUIRE(rc == 0);
  CHECK_THAT(log, Catch::Contains("(cuda:0 on rank 0)"));
  const auto r = test::training_records(dir);
  REQUIRE(r.size() == 6);
  for (const auto& [step, rec] : r) CHECK(std::isfinite(rec.at("loss").get<double>()));
  CHECK(loss_at(r, 6) < loss_at(r, 1));
  CHECK(fs::exists(dir + "/samples/step_00000006.png"));
}

TEST_CASE("two ranks on one GPU are refused before anything is written") {
  if (torch::cuda::device_count() != 1) return;  // (a node with more GPUs gives each rank its own)
  const std::string dir = test::scratch_dir("shared-gpu");
  const int rc = run(2, "--steps 2 --run-dir " + dir + "/run", dir + ".log", test::kTinyUNet, "cuda");
  INFO(slurp(dir + ".log"));
  CHECK(rc == 2);
  CHECK_THAT(slurp(dir + ".log"), Catch::Contains("see one and the same GPU"));
  CHECK_FALSE(fs::exists(dir + "/run"));
}

int main(int argc, char** argv) {
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device visible to LibTorch: the trainer's GPU path cannot run here (skipped)\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
