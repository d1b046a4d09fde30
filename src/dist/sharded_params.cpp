#include "dtrainer/dist/sharded_params.h"

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/parse.h"

namespace dtrainer::dist {

ShardingStrategy parse_sharding_strategy(const std::string& field, const std::string& text) {
  return parse_choice<ShardingStrategy>(
      field, text, {{"replicate", ShardingStrategy::kReplicate}, {"zero1", ShardingStrategy::kZero1}, {"zero2", ShardingStrategy::kZero2}});
}

ShardedParameters::ShardedParameters(torch::nn::Module& module, Communicator* comm, ShardingStrategy strategy, AdamWConfig config)
    : comm_(comm), strategy_(strategy), config_(config) {
  rank_ = comm ? comm->rank() : 0;
  world_ = comm ? comm->world() : 1;
  params_ = module.parameters();
  for (const auto& p : params_) {
    if (p.scalar_type() != torch::kFloat32) throw Error("sharding", "parameters must be fp32 masters");
    numel_ += p.numel();
  }
  padded_ = (numel_ + world_ - 1) / world_ * world_;
  shard_ = padded_ / world_;
  flat_ = torch::zeros({padded_});
  flat_grad_ = torch::zeros({padded_});
  int64_t offset = 0;
  torch::NoGradGuard no_grad;
  for (auto& p : params_) {  // move each parameter into the flat buffer and make it a view of it
    torch::Tensor view = flat_.narrow(0, offset, p.numel()).view(p.sizes());
    view.copy_(p);
    p.set_data(view);
    offset += p.numel();
  }
  const int64_t state = strategy_ == ShardingStrategy::kReplicate ? padded_ : shard_;
  m_ = torch::zeros({state});
  v_ = torch::zeros({state});
}

void ShardedParameters::zero_grad() {
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
}

double ShardedParameters::step(double max_grad_norm, double grad_scale) {
  ++step_;
  // 1. Gradients into the flat buffer (missing gradients count as zeros).
  int64_t offset = 0;
  for (const auto& p : params_) {
    torch::Tensor dst = flat_grad_.narrow(0, offset, p.numel());
    if (p.grad().defined()) dst.copy_(p.grad().reshape({-1}));
    else dst.zero_();
    offset += p.numel();
  }
  // 2. Reduce: every rank the average (replicate, zero1), or only its shard of it (zero2).
  torch::Tensor grad;  // the gradient this rank updates with
  const torch::Tensor my_params = strategy_ == ShardingStrategy::kReplicate ? flat_ : flat_.narrow(0, rank_ * shard_, shard_);
  if (strategy_ == ShardingStrategy::kZero2) {
    grad = torch::empty({shard_});
    if (comm_) comm_->reduce_scatter(flat_grad_, grad, ReduceOp::kAvg);
    else grad.copy_(flat_grad_);
  } else {
    if (comm_) comm_->all_reduce(flat_grad_, ReduceOp::kAvg);
    grad = strategy_ == ShardingStrategy::kReplicate ? flat_grad_ : flat_grad_.narrow(0, rank_ * shard_, shard_);
  }
  // 3. Global norm: replicate holds the full gradient; the zero strategies sum their shards' squares.
  const double norm = strategy_ == ShardingStrategy::kReplicate ? global_grad_norm({grad}, nullptr) * grad_scale
                                                                : global_grad_norm({grad}, comm_) * grad_scale;
  // 4. Update this rank's part, then share the new parameters.
  torch::Tensor target = my_params;
  if (!target.is_contiguous()) throw Error("sharding", "internal: shard not contiguous");
  adamw_step(target, grad.contiguous(), m_, v_, step_, config_, grad_scale * clip_factor(norm, max_grad_norm));
  if (strategy_ != ShardingStrategy::kReplicate && comm_) {
    const torch::Tensor mine = my_params.clone();
    comm_->all_gather(mine, flat_);
  }
  return norm;
}

ShardedMemory ShardedParameters::memory() const {
  ShardedMemory m;
  m.padded_elements = padded_;
  m.param_bytes = 4 * padded_;
  m.grad_bytes = 4 * padded_;  // the flat gradient buffer is full-size under every strategy so far
  m.optimizer_state_bytes = 4 * (m_.numel() + v_.numel());
  return m;
}

}  // namespace dtrainer::dist
