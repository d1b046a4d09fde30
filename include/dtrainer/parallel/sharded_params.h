#pragma once
// Flat-parameter sharding in the spirit of PyTorch FSDP. Each unit of the model (one block; see
// models/unit_runner.h) gets its own flat fp32 buffer, padded to a multiple of the world size and
// split into one contiguous shard per rank; the module's parameters become views into it.
//   replicate  every rank keeps everything; gradients all-reduced (DDP)
//   zero1      + optimizer state (m, v) sharded; parameters all-gathered after the update
//   zero2      + gradients reduce-scattered: each rank keeps only its shard of the reduced gradient
//   zero3      + parameters sharded: a unit's full parameters exist only while it runs — gathered
//              just before its forward, freed after, gathered again when its backward begins (a
//              hook on its outputs' gradients) and freed once its gradients are in, as PyTorch
//              FSDP does; with activation checkpointing, gathered again for the recomputation
// With compute_dtype = bf16 the model computes in bf16: its parameters are bf16 views of a bf16
// compute copy, while the optimizer updates fp32 master shards and writes the copy in the same
// fused pass; gradients arrive in bf16 and are reduced and applied in fp32. Under zero1-3 the
// parameters travel in bf16 (half the bytes of the all-gathers).
// Three parts, one file each: the flat units (src/parallel/flat_unit.h: buffers, padding, the
// parameters as views), the strategy's policy (parallel/sharding_policy.h: what is sharded, gathered
// and reduced when; the strategies differ only there) and the optimizer over the shards
// (parallel/shard_optimizer.h: AdamW + EMA). This class runs them: the gradient hooks, the reductions,
// the gathers, the update.
// Gradient reduction is bucketed by unit and asynchronous: as soon as backward has produced all
// of a unit's gradients (autograd post-hooks on the parameters' gradient accumulators), that
// unit's reduction starts, and it overlaps the rest of backward. Units are launched in a fixed
// order (reverse forward order) on every rank, as MPI requires, on a communicator of their own.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/parallel/adamw.h"
#include "dtrainer/parallel/communicator.h"
#include "dtrainer/parallel/shard_optimizer.h"
#include "dtrainer/parallel/sharding_policy.h"
#include "dtrainer/parallel/sharding_strategy.h"
#include "dtrainer/models/checkpointed_unit.h"
#include "dtrainer/models/unit_runner.h"

namespace torch::autograd {
struct Node;
}

namespace dtrainer::parallel {

struct FlatUnit;

struct ShardingConfig {
  ShardingStrategy strategy = ShardingStrategy::kReplicate;
  AdamWConfig adamw;
  bool activation_checkpointing = false;  // recompute every unit in backward (zero3: regathered for it)
  double ema_decay = 0;                   // > 0: keep a sharded exponential EMA of the weights ("ema")
  // Power-function EMA profiles to keep (EDM2; parallel/power_ema.h), each named phema_name(sigma_rel);
  // their decays must be set before every step (set_average_decays).
  std::vector<double> phema_sigma_rel;
  // What the model computes in: fp32 (the masters themselves) or bf16 (a compute copy; the model's
  // inputs must then be bf16 too).
  torch::ScalarType compute_dtype = torch::kFloat32;
};
torch::ScalarType scalar_type(ComputeDtype dtype);
// The weight averages a configuration keeps, in order: "ema" (when ema_decay > 0), then each profile.
// The first is the one swap_ema and gather_unit(u, true) use.
std::vector<std::string> average_names(const ShardingConfig& config);
torch::ScalarType parse_compute_dtype(const std::string& field, const std::string& text);

// One unit's share of the state, as a checkpoint sees it: flat fp32 tensors of `shard` elements
// covering flat elements [rank * shard, (rank + 1) * shard) of the unit's padded buffer.
struct UnitShard {
  std::string name;
  int64_t numel = 0, padded = 0, shard = 0;
  torch::Tensor params, m, v;
  std::vector<torch::Tensor> averages;  // one per ShardedParameters::average_names() entry
};

class ShardedParameters : public models::UnitRunner, private models::CheckpointHooks {
 public:
  // Takes over `model`'s parameters (every rank must pass an identically initialised model) and
  // installs itself as the model's unit runner. comm may be null for a single process.
  ShardedParameters(models::UnitModel& model, Communicator* comm, ShardingConfig config);
  ~ShardedParameters() override;
  ShardedParameters(const ShardedParameters&) = delete;
  ShardedParameters& operator=(const ShardedParameters&) = delete;

  // loss.backward() for one micro-batch, then the launch of any reduction still due. Pass
  // last_micro_batch = false for all but the last micro-batch of an accumulation: replicate and
  // zero1 then keep accumulating locally (no communication); zero2 and zero3 reduce-scatter every
  // micro-batch into their gradient shards (their full gradients are never kept).
  void backward(const torch::Tensor& loss, bool last_micro_batch = true);
  // After the last backward: finish the reductions, clip to max_grad_norm (<= 0: off), update,
  // update the EMA, and make the parameters current. grad_scale multiplies the gradients first
  // (1 / accumulation steps). Returns the global gradient norm (after grad_scale, before clipping).
  // Gradients are cleared for the next step. A non-finite norm (on any rank: the norm is global)
  // skips the update: nothing changes, steps() does not advance, the caller decides what next.
  // On a CUDA device this reads the norm back (one host synchronisation); step_async does not.
  double step(double max_grad_norm = 0.0, double grad_scale = 1.0);
  // The same without waiting for the device: returns the norm as a one-element fp32 tensor on the
  // parameters' device, and a non-finite norm skips the update on the device itself (fused AdamW
  // with a skip flag; the EMA is left alone too). On the CPU it is step() wrapped in a tensor.
  torch::Tensor step_async(double max_grad_norm = 0.0, double grad_scale = 1.0);
  void zero_grad();
  void set_lr(double lr) { optimizer_.set_lr(lr); }
  // The weight averages kept (average_names(config)), and the next step's decay of each (the
  // trainer warms the EMA up and sets each profile's beta from the images seen).
  const std::vector<std::string>& average_names() const { return optimizer_.average_names(); }
  void set_average_decays(const std::vector<double>& decays) { optimizer_.set_average_decays(decays); }

  // What this rank's buffers hold now, measured (ShardingPolicy::memory predicts it).
  ShardedMemory memory() const;
  const ShardingPolicy& policy() const { return policy_; }
  // Updates made (a read from the device when the parameters live there).
  int64_t steps() const;
  void set_steps(int64_t s);
  torch::Device device() const { return device_; }
  ShardingStrategy strategy() const { return config_.strategy; }
  const ShardingConfig& config() const { return config_; }
  int rank() const { return rank_; }
  int world() const { return world_; }

  // Checkpoint access. unit_shard(u) is this rank's share (views, not copies — copy before the next
  // step). load_unit(u, ...) sets the unit's full state from full-length (numel) tensors; every
  // rank must pass the same values (averages: one per average_names() entry). Under zero3 and for
  // the averages the full state is only ever built one unit at a time.
  size_t num_units() const { return units_.size(); }
  UnitShard unit_shard(size_t u) const;
  void load_unit(size_t u, const torch::Tensor& params, const torch::Tensor& m, const torch::Tensor& v,
                 const std::vector<torch::Tensor>& averages);
  // The unit's full parameters (or its first weight average), numel elements, on every rank (a
  // collective).
  torch::Tensor gather_unit(size_t u, bool ema = false) const;
  // The unit's full state (params, m, v, averages; numel elements each) on every rank (a
  // collective): what a world-size-independent checkpoint stores.
  UnitShard gather_unit_state(size_t u) const;
  // Copy the first weight average into the model's parameters (or back): for sampling with it.
  // Collective; the model is usable until swap back.
  void swap_ema();

  // models::UnitRunner
  std::vector<torch::Tensor> run(size_t index, const Fn& fn, const std::vector<torch::Tensor>& inputs) override;

 private:
  struct Reduction;
  class GradReadyHook;

  // models::CheckpointHooks: gather / free around a zero3 unit's runs.
  void before_run(size_t unit, bool recompute) override;
  void after_run(size_t unit, bool recompute) override;

  std::vector<torch::Tensor> run_gathered(size_t index, const Fn& fn, const std::vector<torch::Tensor>& inputs);
  void gather_for_backward(size_t unit);
  void end_backward(FlatUnit& u);
  void on_grad_ready(size_t unit, size_t param);
  void launch_ready_units();
  void launch(size_t unit);
  void finish_reductions();
  void close_round();
  void gather(FlatUnit& u);
  void publish(FlatUnit& u);
  torch::Tensor step_on_device(double max_grad_norm, double grad_scale);
  std::vector<torch::Tensor> update_gradients();  // (zeroes a consumed whole gradient first)
  void clear_gradient(FlatUnit& u);
  std::vector<torch::Tensor> masters() const;
  std::vector<torch::Tensor> compute_copies() const;
  Communicator* norm_comm() const;
  void gather_updated_shards(FlatUnit& u);
  torch::TensorOptions fp32() const;
  bool low_precision() const { return config_.compute_dtype != torch::kFloat32; }
  torch::Tensor gather_full(const FlatUnit& u, const torch::Tensor& mine) const;
  void release(FlatUnit& u);

  models::UnitModel& model_;
  Communicator* comm_;                       // parameters: gathers, norms (issued in forward order)
  std::unique_ptr<Communicator> grad_comm_;  // gradient reductions (issued in launch order)
  ShardingConfig config_;
  ShardingPolicy policy_;     // what the strategy shards, gathers and reduces
  ShardOptimizer optimizer_;  // AdamW + EMA over the shards this rank updates
  int rank_ = 0, world_ = 1;
  std::vector<std::unique_ptr<FlatUnit>> units_;  // (parallel/flat_unit.h, private)
  std::vector<std::unique_ptr<Reduction>> in_flight_;
  std::vector<size_t> launch_order_;    // unit indices, reverse forward order
  size_t next_launch_ = 0;              // position in launch_order_ of the next unit to launch
  bool sync_ = true;                    // this micro-batch's gradients are to be reduced
  bool round_open_ = false;             // a backward's reductions have begun and not all launched
  int64_t step_ = 0;                    // updates made (host parameters)
  torch::Device device_ = torch::kCPU;  // where every buffer lives: the model's parameters' device
  torch::Tensor device_steps_;          // updates made, counted on the device (CUDA parameters)
};

}  // namespace dtrainer::parallel
