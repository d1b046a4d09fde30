#pragma once
// The optimizer over the flat fp32 shards it is handed: AdamW (parallel/adamw.h) with an optional EMA
// of the weights, one state per shard. It knows nothing of the strategy: under replicate a
// "shard" is a unit's whole buffer, under zero1-3 this rank's 1/W of it; the caller (ShardedParameters)
// reduces the gradients before and gathers the updated parameters after. A new optimizer is a
// class with this interface.

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "dtrainer/parallel/adamw.h"

namespace dtrainer::parallel {

class ShardOptimizer {
 public:
  struct State {
    torch::Tensor m, v;  // AdamW's moments, like the master
    torch::Tensor ema;   // the EMA of the master (undefined when the EMA is off)
  };

  ShardOptimizer(AdamWConfig adamw, double ema_decay) : adamw_(adamw), ema_decay_(ema_decay) {}

  // State for one more shard: zero moments, the EMA starting at the master's values.
  void add(const torch::Tensor& master);
  size_t size() const { return states_.size(); }
  State& state(size_t i) { return states_.at(i); }
  const State& state(size_t i) const { return states_.at(i); }
  bool ema_on() const { return ema_decay_ > 0; }

  void set_lr(double lr) { adamw_.lr = lr; }
  void set_ema_decay(double decay) {  // (the next step's; only while the EMA is on)
    if (ema_decay_ > 0) ema_decay_ = decay;
  }

  // One update of every shard (step counts from 1) with its gradient times `grad_scale`; each
  // defined copies[i] receives the updated master in its dtype (a bf16 compute copy), and the EMA
  // follows the master.
  void step(const std::vector<torch::Tensor>& masters, const std::vector<torch::Tensor>& grads,
            const std::vector<torch::Tensor>& copies, int64_t step, double grad_scale);
  // The same on a CUDA device without waiting for it: gradients divided by `grad_divisor`, nothing
  // changed where `skip` (one element on the device) is non-zero, `step_count` advanced by 1 - skip.
  void step_on_device(const std::vector<torch::Tensor>& masters, const std::vector<torch::Tensor>& grads,
                      const std::vector<torch::Tensor>& copies, torch::Tensor step_count,
                      const torch::Tensor& grad_divisor, const torch::Tensor& skip);

 private:
  AdamWConfig adamw_;
  double ema_decay_ = 0;
  std::vector<State> states_;
};

}  // namespace dtrainer::parallel
