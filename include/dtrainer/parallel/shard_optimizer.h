#pragma once
// The optimizer over the flat fp32 shards it is handed: AdamW (parallel/adamw.h) with weight
// averages beside it (an exponential EMA, or EDM2's power-function profiles: parallel/power_ema.h),
// one state per shard. Each average is elementwise, so a rank averages only the shard it updates:
// sharding costs the averages no communication. It knows nothing of the strategy: under replicate a
// "shard" is a unit's whole buffer, under zero1-3 this rank's 1/W of it; the caller (ShardedParameters)
// reduces the gradients before and gathers the updated parameters after. A new optimizer is a
// class with this interface.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/parallel/adamw.h"

namespace dtrainer::parallel {

class ShardOptimizer {
 public:
  struct State {
    torch::Tensor m, v;                   // AdamW's moments, like the master
    std::vector<torch::Tensor> averages;  // one per average_names() entry, like the master
  };

  // average_names: the averages kept ("ema", "phema_0.05", ...; see ShardingConfig); decays: each
  // one's decay until set_average_decays changes it (NaN: it must be set before every step).
  ShardOptimizer(AdamWConfig adamw, std::vector<std::string> average_names, std::vector<double> decays);

  // State for one more shard: zero moments, every average starting at the master's values.
  void add(const torch::Tensor& master);
  size_t size() const { return states_.size(); }
  State& state(size_t i) { return states_.at(i); }
  const State& state(size_t i) const { return states_.at(i); }
  const std::vector<std::string>& average_names() const { return names_; }

  void set_lr(double lr) { adamw_.lr = lr; }
  // The next step's decay of each average: avg <- decay avg + (1 - decay) master.
  void set_average_decays(const std::vector<double>& decays);

  // One update of every shard (step counts from 1) with its gradient times `grad_scale`; each
  // defined copies[i] receives the updated master in its dtype (a bf16 compute copy), and every
  // average then follows the master (adamw_step's averages: a vectorised pass each).
  void step(const std::vector<torch::Tensor>& masters, const std::vector<torch::Tensor>& grads,
            const std::vector<torch::Tensor>& copies, int64_t step, double grad_scale);
  // The same on a CUDA device without waiting for it: gradients divided by `grad_divisor`, nothing
  // changed where `skip` (one element on the device) is non-zero, `step_count` advanced by 1 - skip.
  void step_on_device(const std::vector<torch::Tensor>& masters, const std::vector<torch::Tensor>& grads,
                      const std::vector<torch::Tensor>& copies, torch::Tensor step_count,
                      const torch::Tensor& grad_divisor, const torch::Tensor& skip);

 private:
  AdamWConfig adamw_;
  std::vector<std::string> names_;
  std::vector<double> decays_;
  std::vector<State> states_;
};

}  // namespace dtrainer::parallel
