#include "dtrainer/parallel/shard_optimizer.h"

#include <cmath>

#include <torch/torch.h>

#include "dtrainer/core/error.h"

namespace dtrainer::parallel {

ShardOptimizer::ShardOptimizer(AdamWConfig adamw, std::vector<std::string> average_names, std::vector<double> decays)
    : adamw_(adamw), names_(std::move(average_names)), decays_(std::move(decays)) {
  if (decays_.size() != names_.size()) throw Error("optimizer", "one decay per weight average");
}

void ShardOptimizer::set_average_decays(const std::vector<double>& decays) {
  if (decays.size() != names_.size())
    throw Error("optimizer",
                std::to_string(decays.size()) + " decays for " + std::to_string(names_.size()) + " weight averages");
  decays_ = decays;
}

void ShardOptimizer::add(const torch::Tensor& master) {
  State s;
  s.m = torch::zeros_like(master);
  s.v = torch::zeros_like(master);
  for (size_t a = 0; a < names_.size(); ++a) s.averages.push_back(master.clone());
  states_.push_back(std::move(s));
}

void ShardOptimizer::step(const std::vector<torch::Tensor>& masters, const std::vector<torch::Tensor>& grads,
                          const std::vector<torch::Tensor>& copies, int64_t step, double grad_scale) {
  for (size_t a = 0; a < decays_.size(); ++a)
    if (!std::isfinite(decays_[a]))
      throw Error("optimizer", "the decay of average " + names_[a] + " was not set for step " + std::to_string(step));
  for (size_t i = 0; i < states_.size(); ++i) {
    State& s = states_[i];
    std::vector<WeightAverage> averages;
    for (size_t a = 0; a < s.averages.size(); ++a) averages.push_back({s.averages[a], decays_[a]});
    adamw_step(masters[i], grads[i], s.m, s.v, step, adamw_, grad_scale, copies[i], averages);
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
  for (size_t a = 0; a < decays_.size(); ++a) {
    if (!std::isfinite(decays_[a]))
      throw Error("optimizer", "the decay of average " + names_[a] + " was not set before the step");
    const torch::Tensor weight = (1 - decays_[a]) * (1 - skip);  // avg += (1-d)(p-avg), not on a skip
    for (size_t i = 0; i < states_.size(); ++i) states_[i].averages[a].lerp_(masters[i], weight);
  }
}

}  // namespace dtrainer::parallel
