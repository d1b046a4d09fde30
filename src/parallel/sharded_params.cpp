#include "dtrainer/parallel/sharded_params.h"

#include <algorithm>
#include <cmath>

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/parallel/power_ema.h"
#include "flat_unit.h"

namespace dtrainer::parallel {

torch::ScalarType scalar_type(ComputeDtype d) { return d == ComputeDtype::kBf16 ? torch::kBFloat16 : torch::kFloat32; }
torch::ScalarType parse_compute_dtype(const std::string& field, const std::string& text) {
  return scalar_type(name_table(ComputeDtype{}).parse(field, text));
}

std::vector<std::string> average_names(const ShardingConfig& c) {
  std::vector<std::string> names;
  if (c.ema_decay > 0) names.push_back("ema");
  for (const double s : c.phema_sigma_rel) {
    phema_gamma(s);  // (the range check)
    names.push_back(phema_name(s));
  }
  for (size_t i = 0; i < names.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (names[i] == names[j]) throw Error("phema_sigma_rel", "the profile " + names[i] + " is listed twice");
  return names;
}

namespace {
// The decays until the trainer sets them: the EMA's, and NaN for the profiles (whose beta depends
// on the images seen: a step without it set is an error, not a silent copy of the weights).
std::vector<double> average_decays(const ShardingConfig& c) {
  std::vector<double> decays;
  if (c.ema_decay > 0) decays.push_back(c.ema_decay);
  for (size_t i = 0; i < c.phema_sigma_rel.size(); ++i) decays.push_back(std::nan(""));
  return decays;
}
}  // namespace

// An in-flight reduction of one unit: reduce-scatter (zero2/3) lands in `recv` and is added to the
// unit's gradient shard when complete; all-reduce works in place.
struct ShardedParameters::Reduction {
  size_t unit;
  std::shared_ptr<Work> work;
  torch::Tensor send, recv;
};

// Fires after a parameter's gradient has been accumulated into .grad.
class ShardedParameters::GradReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  GradReadyHook(ShardedParameters* owner, size_t unit, size_t param) : owner_(owner), unit_(unit), param_(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& inputs) override {
    if (!inputs.empty() && inputs[0].defined()) owner_->on_grad_ready(unit_, param_);
    return outputs;
  }

 private:
  ShardedParameters* owner_;
  size_t unit_, param_;
};

ShardedParameters::ShardedParameters(models::UnitModel& model, Communicator* comm, ShardingConfig config)
    : model_(model),
      comm_(comm),
      config_(config),
      policy_(ShardingPolicy::of(config.strategy)),
      optimizer_(config.adamw, parallel::average_names(config), average_decays(config)) {
  rank_ = comm ? comm->rank() : 0;
  world_ = comm ? comm->world() : 1;
  const std::vector<models::ModelUnit> units = model.units();
  bool first = true;
  for (const auto& unit : units)
    for (const auto& p : unit.parameters) {
      if (first)
        device_ = p.device(), first = false;
      else if (p.device() != device_)
        throw Error("sharding", "unit " + unit.name + ": parameters on " + p.device().str() + " and " + device_.str() +
                                    " (move the whole model to one device first)");
    }
  if (device_.is_cuda()) device_steps_ = torch::zeros({1}, fp32());
  if (config_.compute_dtype != torch::kFloat32 && config_.compute_dtype != torch::kBFloat16)
    throw Error("sharding",
                std::string("compute dtype must be fp32 or bf16, not ") + c10::toString(config_.compute_dtype));
  if (comm) grad_comm_ = comm->duplicate();
  torch::NoGradGuard no_grad;
  for (size_t ui = 0; ui < units.size(); ++ui) {
    auto u = std::make_unique<FlatUnit>(units[ui].name, units[ui].parameters, policy_, rank_, world_,
                                        config_.compute_dtype, fp32());
    for (size_t i = 0; i < u->params.size(); ++i) {  // (held here so that autograd keeps using these)
      u->accumulators.push_back(torch::autograd::impl::grad_accumulator(u->params[i]));
      u->hook_keys.push_back(u->accumulators.back()->add_post_hook(std::make_unique<GradReadyHook>(this, ui, i)));
    }
    if (policy_.shard_parameters) release(*u);  // parameters exist only while the unit runs
    optimizer_.add(u->master);
    units_.push_back(std::move(u));
  }
  for (size_t i = units_.size(); i-- > 0;) launch_order_.push_back(i);
  model_.set_unit_runner(this);
}

ShardedParameters::~ShardedParameters() {
  try {
    for (auto& r : in_flight_)
      if (r->work) r->work->wait();
  } catch (...) {  // a destructor must not throw; the job is failing anyway
  }
  for (auto& u : units_)
    for (size_t i = 0; i < u->accumulators.size(); ++i) u->accumulators[i]->del_post_hook(u->hook_keys[i]);
  if (model_.unit_runner() == this) model_.set_unit_runner(nullptr);
}

std::vector<torch::Tensor> ShardedParameters::run(size_t index, const Fn& fn,
                                                  const std::vector<torch::Tensor>& inputs) {
  if (index >= units_.size()) throw Error("sharding", "unit index " + std::to_string(index) + " out of range");
  if (policy_.recompute || config_.activation_checkpointing)
    return models::run_checkpointed(index, fn, inputs,
                                    policy_.shard_parameters ? static_cast<models::CheckpointHooks*>(this) : nullptr);
  if (policy_.shard_parameters) return run_gathered(index, fn, inputs);
  return fn(inputs);
}

// zero3 without recomputation, as PyTorch FSDP does it: the unit runs on its gathered parameters
// and records its graph as usual; then the gathered memory is freed, but the parameters stay views
// of it (what autograd saved of them, weight.t() included, points into it). A hook on each output
// that will get a gradient gathers the unit again when the first of them arrives, before any of
// the unit's backward nodes runs (they all lie behind its outputs); the memory goes again once
// all the unit's gradients have arrived (on_grad_ready), or at the end of the backward.
std::vector<torch::Tensor> ShardedParameters::run_gathered(size_t index, const Fn& fn,
                                                           const std::vector<torch::Tensor>& inputs) {
  FlatUnit& u = *units_[index];
  gather(u);
  std::vector<torch::Tensor> out;
  try {
    out = fn(inputs);
  } catch (...) {
    release(u);
    throw;
  }
  for (auto& t : out)
    if (t.defined() && t.requires_grad()) {
      t.register_hook([this, index](const torch::Tensor&) { gather_for_backward(index); });
      u.awaiting_backward = true;
    }
  release(u);
  return out;
}

void ShardedParameters::gather_for_backward(size_t unit) {
  FlatUnit& u = *units_[unit];
  if (u.backward_gathered) return;  // (the unit's second output: gathered already)
  u.backward_gathered = true;
  gather(u);
}

void ShardedParameters::end_backward(FlatUnit& u) {
  const bool gathered = u.backward_gathered;
  u.backward_gathered = u.awaiting_backward = false;
  if (gathered)
    release(u);
  else if (u.gathered == 0 && u.viewed)  // (a forward whose backward never reached the unit)
    u.empty_parameters(config_.compute_dtype);
}

void ShardedParameters::before_run(size_t unit, bool) { gather(*units_[unit]); }
void ShardedParameters::after_run(size_t unit, bool) { release(*units_[unit]); }

void ShardedParameters::gather(FlatUnit& u) {
  if (u.gathered++ > 0) return;
  torch::NoGradGuard no_grad;
  u.restore_full();
  const torch::Tensor& mine = low_precision() ? u.compute_shard : u.master;
  if (comm_)
    comm_->all_gather(mine, u.full);
  else
    u.full.copy_(mine);
  if (!u.viewed) u.view_parameters();
}

// The gathered memory goes when no run needs it; the parameters become empty too unless a backward
// will read them through what autograd saved (they are views of `full`, refilled by its gather).
void ShardedParameters::release(FlatUnit& u) {
  if (u.gathered > 0 && --u.gathered > 0) return;
  u.free_full();
  if (!u.awaiting_backward) u.empty_parameters(config_.compute_dtype);
}

void ShardedParameters::on_grad_ready(size_t unit, size_t param) {
  if (!sync_ && !policy_.reduces_each_micro_batch()) return;  // accumulating locally
  FlatUnit& u = *units_[unit];
  // A gradient after the unit's reduction has begun would be lost: the unit ran twice in one
  // backward (a recomputed unit's parameters accumulate once per run). One backward per pass.
  if (u.launched)
    throw Error("unit " + u.name,
                "got gradients after its reduction had started: it ran more than once in one "
                "backward; call backward once per forward pass (as micro-batches do)");
  if (u.arrived[param]) return;  // (its accumulator fired again before the unit was complete: still packed)
  u.arrived[param] = true;
  round_open_ = true;
  if (++u.n_arrived < u.params.size()) return;
  if (policy_.shard_parameters) end_backward(u);  // zero3: the unit's backward is done with its parameters
  launch_ready_units();
}

// Launch, in launch order, every unit whose gradients are complete, stopping at the first that is
// not: every rank then issues the same reductions in the same order.
void ShardedParameters::launch_ready_units() {
  while (next_launch_ < launch_order_.size()) {
    FlatUnit& u = *units_[launch_order_[next_launch_]];
    if (u.n_arrived != u.params.size()) break;
    launch(launch_order_[next_launch_++]);
  }
  for (auto& r : in_flight_)
    if (r->work) r->work->test();  // let MPI move what is already under way
}

void ShardedParameters::launch(size_t unit) {
  FlatUnit& u = *units_[unit];
  torch::NoGradGuard no_grad;
  const bool scatter = policy_.shard_gradients;
  torch::Tensor send = scatter ? torch::empty({u.padded}, fp32()) : u.grad;
  u.pack_gradients(send);
  if (!scatter) u.grad_consumed = false;
  auto r = std::make_unique<Reduction>();
  r->unit = unit;
  r->send = send;
  if (scatter) {
    r->recv = torch::empty({u.shard}, fp32());
    if (grad_comm_)
      r->work = grad_comm_->reduce_scatter(send, r->recv, ReduceOp::kAvg, true);
    else
      r->recv.copy_(send);
  } else if (grad_comm_) {
    r->work = grad_comm_->all_reduce(send, ReduceOp::kAvg, true);
  }
  u.reset_round();
  u.launched = true;
  in_flight_.push_back(std::move(r));
}

void ShardedParameters::finish_reductions() {
  for (auto& r : in_flight_) {
    if (r->work) r->work->wait();
    if (r->recv.defined()) units_[r->unit]->grad.add_(r->recv);
  }
  in_flight_.clear();
}

void ShardedParameters::close_round() {
  if (policy_.shard_parameters)  // zero3: units whose gradients did not all arrive let go now
    for (auto& u : units_) end_backward(*u);
  if (!round_open_) return;
  // Units whose gradients did not all arrive (unused parameters) are reduced now, in order.
  for (; next_launch_ < launch_order_.size(); ++next_launch_) launch(launch_order_[next_launch_]);
  next_launch_ = 0;
  for (auto& u : units_) u->launched = false;
  round_open_ = false;
}

void ShardedParameters::backward(const torch::Tensor& loss, bool last_micro_batch) {
  sync_ = last_micro_batch;
  if (sync_ || policy_.reduces_each_micro_batch()) round_open_ = true;
  loss.backward();
  close_round();
  if (!sync_ && policy_.reduces_each_micro_batch()) finish_reductions();  // the packed buffers go now
  sync_ = true;
}

torch::TensorOptions ShardedParameters::fp32() const {
  return torch::TensorOptions().dtype(torch::kFloat32).device(device_);
}

int64_t ShardedParameters::steps() const {
  return device_steps_.defined() ? static_cast<int64_t>(device_steps_.item<float>()) : step_;
}

void ShardedParameters::set_steps(int64_t s) {
  step_ = s;
  if (device_steps_.defined()) device_steps_.fill_(static_cast<double>(s));
}

torch::Tensor ShardedParameters::step_async(double max_grad_norm, double grad_scale) {
  if (device_.is_cuda()) return step_on_device(max_grad_norm, grad_scale);
  return torch::full({1}, step(max_grad_norm, grad_scale), torch::kFloat32);
}

// What each unit's update writes besides the masters: the bf16 compute copy (all of it when the
// state is whole, else this rank's shard); nothing under fp32 compute.
std::vector<torch::Tensor> ShardedParameters::compute_copies() const {
  std::vector<torch::Tensor> copies;
  for (const auto& u : units_)
    copies.push_back(!low_precision() ? torch::Tensor() : policy_.shard_optimizer_state ? u->compute_shard : u->full);
  return copies;
}

std::vector<torch::Tensor> ShardedParameters::masters() const {
  std::vector<torch::Tensor> out;
  for (const auto& u : units_) out.push_back(u->master);
  return out;
}

// The norm is global: a reduction over the ranks' shards, or (whole gradients) the local sum.
Communicator* ShardedParameters::norm_comm() const { return policy_.shard_optimizer_state ? comm_ : nullptr; }

torch::Tensor ShardedParameters::step_on_device(double max_grad_norm, double grad_scale) {
  close_round();
  finish_reductions();
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> grads = update_gradients();
  const torch::Tensor norm = global_grad_norm_on_device(grads, norm_comm()) * grad_scale;
  const torch::Tensor skip = torch::isfinite(norm).logical_not().to(torch::kFloat32);
  // clip_factor's min(1, max / (norm + 1e-6)) on the device; the kernel divides by the inverse.
  torch::Tensor factor = torch::full({1}, grad_scale, fp32());
  if (max_grad_norm > 0) factor = factor * torch::clamp_max(max_grad_norm / (norm + 1e-6), 1.0);
  optimizer_.step_on_device(masters(), grads, compute_copies(), device_steps_, 1.0 / factor, skip);
  for (auto& u : units_) {
    gather_updated_shards(*u);
    clear_gradient(*u);
  }
  return norm;
}

double ShardedParameters::step(double max_grad_norm, double grad_scale) {
  if (device_.is_cuda()) return step_on_device(max_grad_norm, grad_scale).item<double>();
  close_round();  // (a caller that ran loss.backward() itself: what backward() would have launched)
  finish_reductions();
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> grads = update_gradients();
  const double norm = global_grad_norm(grads, norm_comm()) * grad_scale;
  if (!std::isfinite(norm)) {  // every rank sees the same norm: all skip the update together
    for (auto& u : units_) clear_gradient(*u);
    return norm;
  }
  ++step_;
  optimizer_.step(masters(), grads, compute_copies(), step_, grad_scale * clip_factor(norm, max_grad_norm));
  for (auto& u : units_) {
    gather_updated_shards(*u);
    clear_gradient(*u);
  }
  return norm;
}

void ShardedParameters::zero_grad() {
  finish_reductions();
  for (auto& u : units_) {
    for (auto& p : u->params) p.mutable_grad() = torch::Tensor();
    u->grad.zero_();
    u->grad_consumed = false;
    u->reset_round();
    if (policy_.shard_parameters) end_backward(*u);
  }
  next_launch_ = 0;
  round_open_ = false;
}

// Measured: the bytes of the distinct storages each unit's buffers hold right now (a master that
// views the full parameters counts once); the transient buffers as the policy sizes them.
ShardedMemory ShardedParameters::memory() const {
  ShardedMemory m;
  std::vector<int64_t> padded;
  for (size_t i = 0; i < units_.size(); ++i) {
    const FlatUnit& u = *units_[i];
    const ShardOptimizer::State& s = optimizer_.state(i);
    std::vector<const void*> seen;
    auto bytes = [&seen](const torch::Tensor& t) -> int64_t {
      if (!t.defined() || t.numel() == 0) return 0;
      const void* storage = t.storage().data();
      if (std::find(seen.begin(), seen.end(), storage) != seen.end()) return 0;
      seen.push_back(storage);
      return static_cast<int64_t>(t.storage().nbytes());
    };
    m.padded_elements += u.padded;
    padded.push_back(u.padded);
    m.param_bytes += bytes(u.full) + bytes(u.master) + bytes(u.compute_shard);
    m.grad_bytes += bytes(u.grad);
    m.optimizer_state_bytes += bytes(s.m) + bytes(s.v);
    for (const auto& a : s.averages) m.ema_bytes += bytes(a);
  }
  const int averages = static_cast<int>(optimizer_.average_names().size());
  m.transient_unit_bytes = policy_.memory(padded, world_, low_precision(), averages).transient_unit_bytes;
  return m;
}

UnitShard ShardedParameters::unit_shard(size_t i) const {
  const FlatUnit& u = *units_.at(i);
  const ShardOptimizer::State& st = optimizer_.state(i);
  UnitShard s{u.name, u.numel, u.padded, u.shard, {}, {}, {}, {}};
  auto mine = [&](const torch::Tensor& t) { return policy_.shard_optimizer_state ? t : u.mine(t); };
  s.params = mine(u.master);
  s.m = mine(st.m);
  s.v = mine(st.v);
  for (const auto& a : st.averages) s.averages.push_back(mine(a));
  return s;
}

void ShardedParameters::load_unit(size_t i, const torch::Tensor& params, const torch::Tensor& m, const torch::Tensor& v,
                                  const std::vector<torch::Tensor>& averages) {
  FlatUnit& u = *units_.at(i);
  ShardOptimizer::State& st = optimizer_.state(i);
  for (const auto* t : {&params, &m, &v})
    if (!t->defined() || t->numel() != u.numel)
      throw Error("sharding", "unit " + u.name + ": state has " + std::to_string(t->defined() ? t->numel() : 0) +
                                  " elements, the model's unit has " + std::to_string(u.numel));
  if (averages.size() != st.averages.size())
    throw Error("sharding", "unit " + u.name + ": " + std::to_string(averages.size()) + " weight averages for the " +
                                std::to_string(st.averages.size()) + " kept");
  for (size_t a = 0; a < averages.size(); ++a)
    if (!averages[a].defined() || averages[a].numel() != u.numel)
      throw Error("sharding", "unit " + u.name + ": weight average " + average_names()[a] + " has the wrong size");
  torch::NoGradGuard no_grad;
  // Padded full-length copy, then this rank's part of it.
  auto mine = [&](const torch::Tensor& t) {
    const torch::Tensor p = u.padded_copy(t);
    return policy_.shard_optimizer_state ? u.mine(p) : p;
  };
  st.m.copy_(mine(m));
  st.v.copy_(mine(v));
  for (size_t a = 0; a < averages.size(); ++a) st.averages[a].copy_(mine(averages[a]));
  // Every rank has the full parameters here: no communication needed to set what the model uses.
  torch::Tensor p = torch::zeros({u.padded});
  p.narrow(0, 0, u.numel).copy_(params.reshape({-1}));
  u.master.copy_(policy_.shard_optimizer_state ? u.mine(p) : p);
  if (!policy_.shard_parameters) u.full.copy_(p);
  if (u.compute_shard.defined()) u.compute_shard.copy_(u.master);
}

// Makes what the model computes with equal the masters again after they changed other than by an
// update (swap_ema): the compute copy, and with sharded state but whole parameters every rank's
// shard of the full parameters (a collective).
void ShardedParameters::publish(FlatUnit& u) {
  torch::NoGradGuard no_grad;
  if (low_precision()) {
    if (policy_.shard_optimizer_state)
      u.compute_shard.copy_(u.master);
    else
      u.full.copy_(u.master);
  }
  gather_updated_shards(u);
}

// zero1/2: the full parameters the model computes with, from every rank's updated shard (nothing
// to do for replicate, which updates them in place, and zero3, which gathers before each run).
void ShardedParameters::gather_updated_shards(FlatUnit& u) {
  if (!policy_.gathers_after_update()) return;
  const bool low = low_precision();
  const torch::Tensor mine = low ? u.compute_shard : u.master.clone();  // (all_gather may not alias its input)
  if (comm_)
    comm_->all_gather(mine, u.full);
  else if (low)
    u.full.copy_(mine);
}

// The gradient each rank updates with: the whole reduced gradient (replicate), its slice (zero1),
// or its reduced shard (zero2/3).
std::vector<torch::Tensor> ShardedParameters::update_gradients() {
  std::vector<torch::Tensor> grads;
  for (const auto& u : units_) {
    if (u->grad_consumed) {  // no gradient packed since the last update: the unit's gradient is zero
      u->grad.zero_();
      u->grad_consumed = false;
    }
    grads.push_back(policy_.slices_whole_gradient() ? u->mine(u->grad) : u->grad);
  }
  return grads;
}

// After an update: reduced shards are accumulated into (zero2/3), so they start again at zero;
// whole gradients are overwritten by the next pack, so zeroing them would be a pass over the
// whole gradient for nothing (measured 0.1 s a step on sdxl-c128); they are marked consumed.
void ShardedParameters::clear_gradient(FlatUnit& u) {
  if (policy_.shard_gradients)
    u.grad.zero_();
  else
    u.grad_consumed = true;
}

torch::Tensor ShardedParameters::gather_unit(size_t i, bool ema) const {
  const FlatUnit& u = *units_.at(i);
  const ShardOptimizer::State& st = optimizer_.state(i);
  if (ema && st.averages.empty()) throw Error("sharding", "gather_unit: no weight average is kept");
  if (!ema && !policy_.shard_parameters && !low_precision()) return u.full.narrow(0, 0, u.numel).clone();
  return gather_full(u, ema ? st.averages.front() : u.master);
}

// `mine` is this rank's part of a unit-sized flat tensor (the whole of it when the state is whole).
torch::Tensor ShardedParameters::gather_full(const FlatUnit& u, const torch::Tensor& mine) const {
  if (!policy_.shard_optimizer_state) return mine.narrow(0, 0, u.numel).clone();
  torch::Tensor full = torch::empty({u.padded}, fp32());
  if (comm_)
    comm_->all_gather(mine.contiguous(), full);
  else
    full.copy_(mine);
  return full.narrow(0, 0, u.numel).clone();
}

UnitShard ShardedParameters::gather_unit_state(size_t i) const {
  const FlatUnit& u = *units_.at(i);
  const ShardOptimizer::State& st = optimizer_.state(i);
  UnitShard s{u.name, u.numel, u.padded, u.numel, gather_unit(i), gather_full(u, st.m), gather_full(u, st.v), {}};
  for (const auto& a : st.averages) s.averages.push_back(gather_full(u, a));
  return s;
}

void ShardedParameters::swap_ema() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < units_.size(); ++i) {
    FlatUnit& u = *units_[i];
    auto& averages = optimizer_.state(i).averages;
    if (averages.empty()) throw Error("sharding", "swap_ema: no weight average is kept (ema_decay = 0, no profiles)");
    torch::Tensor& ema = averages.front();
    torch::Tensor tmp = u.master.clone();
    u.master.copy_(ema);
    ema.copy_(tmp);
    publish(u);
  }
}

}  // namespace dtrainer::parallel
