#include "dtrainer/parallel/shard_optimizer.h"

#include <torch/torch.h>

namespace dtrainer::parallel {

void ShardOptimizer::add(const torch::Tensor& master) {
  State s;
  s.m = torch::zeros_like(master);
  s.v = torch::zeros_like(master);
  if (ema_on()) s.ema = master.clone();
  states_.push_back(std::move(s));
}

void ShardOptimizer::step(const std::vector<torch::Tensor>& masters, const std::vector<torch::Tensor>& grads,
                          const std::vector<torch::Tensor>& copies, int64_t step, double grad_scale) {
  for (size_t i = 0; i < states_.size(); ++i) {
    State& s = states_[i];
    adamw_step(masters[i], grads[i], s.m, s.v, step, adamw_, grad_scale, copies[i]);
    if (s.ema.defined()) ema_update(s.ema, masters[i], ema_decay_);
  }
}

void ShardOptimizer::step_on_device(const std::vector<torch::Tensor>& masters, const std::vector<torch::Tensor>& grads,
                                    const std::vector<torch::Tensor>& copies, torch::Tensor step_count,
                                    const torch::Tensor& grad_divisor, const torch::Tensor& skip) {
  std::vector<torch::Tensor> ms, vs, defined_copies;
  for (auto& s : states_) ms.push_back(s.m), vs.push_back(s.v);
  for (const auto& c : copies)
    if (c.defined()) defined_copies.push_back(c);
  adamw_step_on_device(masters, grads, ms, vs, std::move(step_count), adamw_, grad_divisor, skip, defined_copies);
  for (size_t i = 0; i < states_.size(); ++i)
    if (states_[i].ema.defined())
      states_[i].ema.lerp_(masters[i], (1 - ema_decay_) * (1 - skip));  // ema += (1-d)(p-ema), not on a skip
}

}  // namespace dtrainer::parallel
