// The memory a sharding strategy needs, three ways that must agree: the policy's sizes
// (parallel::ShardingPolicy::memory over the model's real units), the bytes the real buffers of
// ShardedParameters hold (measured storage by storage), and the dry run's estimate
// (train::estimate_memory, the model as one unit) — for every strategy, compute dtype and EMA
// setting, on 2 and 4 ranks (where padding and shards differ).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "parallel/mpi_test_runtime.h"
#include "dtrainer/parallel/mpi_communicator.h"
#include "dtrainer/parallel/sharded_params.h"
#include "dtrainer/models/backbone.h"
#include "dtrainer/train/memory_plan.h"
#include "dtrainer/train/train_config.h"

using namespace dtrainer;
using namespace dtrainer::parallel;

TEST_CASE("memory: the policy's sizes equal the real buffers, and the dry run's estimate is within padding") {
  auto comm = make_mpi_communicator(test::mpi_runtime().comm());
  const int W = comm->world();
  const models::BackboneSpec spec =
      models::resolve_backbone("unet-tiny", {}, models::preset_inputs("unet-tiny"), /*control_conditioning=*/false);
  const models::BackboneCost cost = models::backbone_cost(spec);
  for (const auto& [strategy_name, strategy] : name_table(ShardingStrategy{}).entries())
    for (const bool bf16 : {false, true})
      for (const bool ema : {false, true}) {
        INFO(strategy_name << (bf16 ? ", bf16" : ", fp32") << (ema ? ", EMA" : "") << " on " << W << " ranks");
        torch::manual_seed(3);
        auto model = models::build_backbone(spec);
        ShardingConfig sc;
        sc.strategy = strategy;
        sc.compute_dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
        sc.ema_decay = ema ? 0.999 : 0.0;
        ShardedParameters sharded(model->unit_model(), comm.get(), sc);
        std::vector<int64_t> padded;
        int64_t numel = 0;
        for (size_t u = 0; u < sharded.num_units(); ++u) {
          padded.push_back(sharded.unit_shard(u).padded);
          numel += sharded.unit_shard(u).numel;
        }
        REQUIRE(numel == cost.params);
        const ShardedMemory real = sharded.memory();
        const ShardedMemory policy = ShardingPolicy::of(strategy).memory(padded, W, bf16, ema);
        CHECK(real.param_bytes == policy.param_bytes);
        CHECK(real.grad_bytes == policy.grad_bytes);
        CHECK(real.optimizer_state_bytes == policy.optimizer_state_bytes);
        CHECK(real.ema_bytes == policy.ema_bytes);
        CHECK(real.padded_elements == policy.padded_elements);
        CHECK(real.optimizer_state_bytes > 0);
        CHECK((real.ema_bytes > 0) == ema);

        train::TrainConfig c;
        c.sharding = strategy;
        c.compute_dtype = bf16 ? ComputeDtype::kBf16 : ComputeDtype::kFp32;
        c.ema_decay = sc.ema_decay;
        const train::MemoryEstimate e = train::estimate_memory(c, cost, W, 1);
        // Each real unit pads to a multiple of W (under W elements; at most 16 bytes per element
        // over all buffers), the estimate's one unit likewise.
        const double slack = 16.0 * W * static_cast<double>(padded.size() + 1);
        CHECK(std::abs(e.params - static_cast<double>(real.param_bytes)) <= slack);
        CHECK(std::abs(e.grads - static_cast<double>(real.grad_bytes)) <= slack);
        CHECK(std::abs(e.optimizer - static_cast<double>(real.optimizer_state_bytes)) <= slack);
        CHECK(std::abs(e.ema - static_cast<double>(real.ema_bytes)) <= slack);
      }
}
