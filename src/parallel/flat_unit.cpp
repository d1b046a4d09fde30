#include "flat_unit.h"

#include <algorithm>

#include <torch/torch.h>

#include "dtrainer/core/error.h"

namespace dtrainer::parallel {

FlatUnit::FlatUnit(std::string unit_name, std::vector<torch::Tensor> parameters, const ShardingPolicy& policy,
                   int rank_, int world, torch::ScalarType compute_dtype, const torch::TensorOptions& fp32)
    : name(std::move(unit_name)), params(std::move(parameters)), rank(rank_) {
  for (const auto& p : params) {
    if (p.scalar_type() != torch::kFloat32)
      throw Error("sharding", "unit " + name + ": parameters must be fp32 masters");
    if (!p.requires_grad()) throw Error("sharding", "unit " + name + ": every parameter must require grad");
    offsets.push_back(numel);
    numels.push_back(p.numel());
    shapes.push_back(p.sizes().vec());
    numel += p.numel();
  }
  padded = padded_size(numel, world);
  shard = padded / world;
  const bool low = compute_dtype != torch::kFloat32;
  const UnitBufferSizes sizes = policy.buffers(padded, world, low, /*ema=*/false);
  torch::NoGradGuard no_grad;
  torch::Tensor flat = torch::zeros({padded}, fp32);
  for (size_t i = 0; i < params.size(); ++i)
    flat.narrow(0, offsets[i], params[i].numel()).copy_(params[i].reshape({-1}));
  full = low ? flat.to(compute_dtype) : flat;
  // The module's tensors become views of the flat buffer (in the compute dtype) before they get
  // their gradient accumulators (ShardedParameters): autograd drops an accumulator when a
  // parameter's dtype changes, and it records the real shapes (zero3 empties the parameters).
  view_parameters();
  if (sizes.master_views_full)
    master = policy.shard_optimizer_state ? mine(full) : full;
  else
    master = policy.shard_optimizer_state ? mine(flat).clone() : flat;
  if (sizes.compute_shard > 0) compute_shard = mine(full).clone();
  grad = torch::zeros({sizes.grad}, fp32);
  arrived.assign(params.size(), false);
}

void FlatUnit::view_parameters() {
  for (size_t i = 0; i < params.size(); ++i) params[i].set_data(full.narrow(0, offsets[i], numels[i]).view(shapes[i]));
  viewed = true;
}

void FlatUnit::empty_parameters(torch::ScalarType compute_dtype) {
  for (auto& p : params) p.set_data(torch::empty({0}, p.options().dtype(compute_dtype)));
  viewed = false;
}

void FlatUnit::free_full() {
  c10::StorageImpl* s = full.storage().unsafeGetStorageImpl();
  s->set_data_ptr_noswap(at::DataPtr(nullptr, s->device()));
  s->set_nbytes(0);
}

void FlatUnit::restore_full() {
  c10::StorageImpl* s = full.storage().unsafeGetStorageImpl();
  const size_t bytes = static_cast<size_t>(padded) * full.element_size();
  if (s->nbytes() == bytes) return;
  if (s->allocator() == nullptr) throw Error("sharding", "unit " + name + ": its gathered buffer has no allocator");
  s->set_data_ptr_noswap(s->allocator()->allocate(bytes));
  s->set_nbytes(bytes);
}

void FlatUnit::pack_gradients(torch::Tensor& send) {
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor dst = send.narrow(0, offsets[i], numels[i]);
    torch::Tensor& g = params[i].mutable_grad();
    if (g.defined())
      dst.copy_(g.reshape({-1}));
    else
      dst.zero_();
    g = torch::Tensor();
  }
  send.narrow(0, numel, padded - numel).zero_();
}

torch::Tensor FlatUnit::padded_copy(const torch::Tensor& t) const {
  torch::Tensor p = torch::zeros({padded});
  p.narrow(0, 0, numel).copy_(t.reshape({-1}).to(torch::kFloat32));
  return p;
}

void FlatUnit::reset_round() {
  std::fill(arrived.begin(), arrived.end(), false);
  n_arrived = 0;
  launched = false;
}

}  // namespace dtrainer::parallel
