#include "dtrainer/train/memory_plan.h"

#include "dtrainer/core/error.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/parallel/sharding_policy.h"
#include "dtrainer/train/train_config.h"

namespace dtrainer::train {

std::string MemoryEstimate::describe() const {
  return "params " + format_bytes(params) + ", grads " + format_bytes(grads) + ", AdamW state " +
         format_bytes(optimizer) + ", EMA " + format_bytes(ema) + ", activations ~" + format_bytes(activations) +
         " => ~" + format_bytes(total());
}

MemoryEstimate estimate_memory(const TrainConfig& c, const models::BackboneCost& cost, int64_t world,
                               int64_t micro_batch) {
  // The persistent buffers as the strategy's policy sizes them (the model as one unit: the real
  // units' padding adds under W elements each); test_sharding_memory ties both to the real buffers.
  const parallel::ShardingPolicy policy = parallel::ShardingPolicy::of(c.sharding);
  const bool bf16 = c.compute_dtype == parallel::ComputeDtype::kBf16;
  const int W = static_cast<int>(world);
  const parallel::ShardedMemory s =
      policy.memory({parallel::padded_size(cost.params, W)}, W, bf16, weight_average_count(c));
  MemoryEstimate m;
  m.params = static_cast<double>(s.param_bytes);
  m.grads = static_cast<double>(s.grad_bytes);
  m.optimizer = static_cast<double>(s.optimizer_state_bytes);
  m.ema = static_cast<double>(s.ema_bytes);
  const bool ckpt = c.activation_checkpointing || policy.recompute;
  m.activations = (bf16 ? 2.0 : 4.0) * static_cast<double>(cost.activation_elems) * static_cast<double>(micro_batch) *
                  (ckpt ? 0.1 : 1.0);
  return m;
}

void check_memory_fits(const TrainConfig& c, const MemoryEstimate& per_rank, int64_t ranks_here, double available,
                       const std::string& what) {
  if (available < 0 || c.ignore_memory_check) return;
  const double need = per_rank.total() * static_cast<double>(ranks_here);
  if (need <= available) return;
  std::string help;
  auto add = [&](const std::string& h) { help += (help.empty() ? "" : "; ") + h; };
  const parallel::ShardingPolicy policy = parallel::ShardingPolicy::of(c.sharding);
  if (!policy.shard_parameters)
    add("sharding = \"zero3\" (parameters, gradients and optimizer state split over the ranks)");
  if (!c.activation_checkpointing && !policy.recompute && per_rank.activations > 0.2 * per_rank.total())
    add("activation_checkpointing = true (activations ~" + format_bytes(per_rank.activations) + " per rank now)");
  if (per_rank.activations > 0.2 * per_rank.total())
    add("a smaller micro_batch (gradient accumulation keeps the global batch)");
  add("more ranks over more nodes (fewer ranks per node)");
  throw Error("memory", "the plan needs ~" + format_bytes(need) + " on this node (" + std::to_string(ranks_here) +
                            " rank" + (ranks_here > 1 ? "s" : "") + " x " + per_rank.describe() + ") but " + what +
                            " is " + format_bytes(available) + ". What would help: " + help +
                            ". --ignore-memory-check starts anyway (dtrainer --dry-run prints the plan)");
}

}  // namespace dtrainer::train
