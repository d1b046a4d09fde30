#include "dtrainer/dist/sharded_params.h"

#include <algorithm>
#include <cmath>

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/parse.h"

namespace dtrainer::dist {

ShardingStrategy parse_sharding_strategy(const std::string& field, const std::string& text) {
  return parse_choice<ShardingStrategy>(field, text,
                                        {{"replicate", ShardingStrategy::kReplicate},
                                         {"zero1", ShardingStrategy::kZero1},
                                         {"zero2", ShardingStrategy::kZero2},
                                         {"zero3", ShardingStrategy::kZero3}});
}

torch::ScalarType parse_compute_dtype(const std::string& field, const std::string& text) {
  return parse_choice<torch::ScalarType>(field, text, {{"fp32", torch::kFloat32}, {"bf16", torch::kBFloat16}});
}

const char* sharding_strategy_name(ShardingStrategy s) {
  switch (s) {
    case ShardingStrategy::kReplicate: return "replicate";
    case ShardingStrategy::kZero1: return "zero1";
    case ShardingStrategy::kZero2: return "zero2";
    case ShardingStrategy::kZero3: return "zero3";
  }
  return "?";
}

// One unit's flat state. Flat layout: the parameters back to back in units()' order, then zeros up
// to `padded`; rank r owns elements [r * shard, (r + 1) * shard).
struct ShardedParameters::Unit {
  std::string name;
  std::vector<torch::Tensor> params;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int64_t> offsets, numels;  // (under zero3 the parameters themselves are empty most of the time)
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hook_keys;
  int64_t numel = 0, padded = 0, shard = 0;
  torch::Tensor
      full;  // [padded] the parameters the model computes with (compute dtype); under zero3 only while gathered
  torch::Tensor master;         // fp32, what this rank updates: replicate all [padded], zero1-3 its [shard]
                                // (with fp32 compute and zero1-3 not sharded: a view of full, else its own)
  torch::Tensor compute_shard;  // bf16 compute under zero1-3: this rank's [shard] of the copy, written by the update
  torch::Tensor grad;           // replicate/zero1: [padded] packed and all-reduced; zero2/3: [shard] accumulated
  torch::Tensor m, v, ema;
  std::vector<bool> arrived;  // this round's gradient has arrived for parameter i
  size_t n_arrived = 0;
  bool launched = false;  // reduced in this round
  int gathered = 0;       // zero3: runs in progress that need the full parameters
};

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
    : model_(model), comm_(comm), config_(config) {
  rank_ = comm ? comm->rank() : 0;
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
  world_ = comm ? comm->world() : 1;
  if (config_.compute_dtype != torch::kFloat32 && config_.compute_dtype != torch::kBFloat16)
    throw Error("sharding",
                std::string("compute dtype must be fp32 or bf16, not ") + c10::toString(config_.compute_dtype));
  if (comm) grad_comm_ = comm->duplicate();
  const bool zero3 = config_.strategy == ShardingStrategy::kZero3;
  const bool whole = config_.strategy == ShardingStrategy::kReplicate;
  const bool low = low_precision();
  torch::NoGradGuard no_grad;
  for (size_t ui = 0; ui < units.size(); ++ui) {
    auto u = std::make_unique<Unit>();
    u->name = units[ui].name;
    u->params = units[ui].parameters;
    for (const auto& p : u->params) {
      if (p.scalar_type() != torch::kFloat32)
        throw Error("sharding", "unit " + u->name + ": parameters must be fp32 masters");
      if (!p.requires_grad()) throw Error("sharding", "unit " + u->name + ": every parameter must require grad");
      u->offsets.push_back(u->numel);
      u->numels.push_back(p.numel());
      u->shapes.push_back(p.sizes().vec());
      u->numel += p.numel();
    }
    u->padded = (u->numel + world_ - 1) / world_ * world_;
    u->shard = u->padded / world_;
    torch::Tensor flat = torch::zeros({u->padded}, fp32());
    for (size_t i = 0; i < u->params.size(); ++i)
      flat.narrow(0, u->offsets[i], u->params[i].numel()).copy_(u->params[i].reshape({-1}));
    u->full = low ? flat.to(config_.compute_dtype) : flat;
    // The module's tensors become views of the flat buffer (in the compute dtype), and only then
    // get their gradient accumulators: autograd drops an accumulator when a parameter's dtype
    // changes, and it records the real shapes (zero3 empties the parameters below). They are held
    // here so autograd keeps using these.
    for (size_t i = 0; i < u->params.size(); ++i)
      u->params[i].set_data(u->full.narrow(0, u->offsets[i], u->numels[i]).view(u->shapes[i]));
    for (size_t i = 0; i < u->params.size(); ++i) {
      u->accumulators.push_back(torch::autograd::impl::grad_accumulator(u->params[i]));
      u->hook_keys.push_back(u->accumulators.back()->add_post_hook(std::make_unique<GradReadyHook>(this, ui, i)));
    }
    if (whole)
      u->master = flat;
    else if (zero3 || low)
      u->master = flat.narrow(0, rank_ * u->shard, u->shard).clone();
    else
      u->master = u->full.narrow(0, rank_ * u->shard, u->shard);
    if (low && !whole) u->compute_shard = u->full.narrow(0, rank_ * u->shard, u->shard).clone();
    if (zero3) release(*u);  // parameters exist only while the unit runs
    const int64_t state = whole ? u->padded : u->shard;
    u->grad = torch::zeros({config_.strategy == ShardingStrategy::kZero2 || zero3 ? u->shard : u->padded}, fp32());
    u->m = torch::zeros({state}, fp32());
    u->v = torch::zeros({state}, fp32());
    if (config_.ema_decay > 0) u->ema = u->master.clone();
    u->arrived.assign(u->params.size(), false);
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

bool ShardedParameters::reduces_each_micro_batch() const {
  return config_.strategy == ShardingStrategy::kZero2 || config_.strategy == ShardingStrategy::kZero3;
}

torch::Tensor ShardedParameters::run(size_t index, const Fn& fn, const std::vector<torch::Tensor>& inputs) {
  if (index >= units_.size()) throw Error("sharding", "unit index " + std::to_string(index) + " out of range");
  const bool zero3 = config_.strategy == ShardingStrategy::kZero3;
  if (zero3 || config_.activation_checkpointing)
    return models::run_checkpointed(index, fn, inputs, zero3 ? static_cast<models::CheckpointHooks*>(this) : nullptr);
  return fn(inputs);
}

void ShardedParameters::before_run(size_t unit, bool) { gather(*units_[unit]); }
void ShardedParameters::after_run(size_t unit, bool) { release(*units_[unit]); }

void ShardedParameters::gather(Unit& u) {
  if (u.gathered++ > 0) return;
  torch::NoGradGuard no_grad;
  u.full = torch::empty({u.padded}, fp32().dtype(config_.compute_dtype));
  const torch::Tensor& mine = low_precision() ? u.compute_shard : u.master;
  if (comm_)
    comm_->all_gather(mine, u.full);
  else
    u.full.copy_(mine);
  for (size_t i = 0; i < u.params.size(); ++i)
    u.params[i].set_data(u.full.narrow(0, u.offsets[i], u.numels[i]).view(u.shapes[i]));
}

void ShardedParameters::release(Unit& u) {
  if (u.gathered > 0 && --u.gathered > 0) return;
  for (auto& p : u.params)  // same dtype and device: the accumulator stays
    p.set_data(torch::empty({0}, fp32().dtype(config_.compute_dtype)));
  u.full = torch::Tensor();
}

void ShardedParameters::on_grad_ready(size_t unit, size_t param) {
  if (!sync_ && !reduces_each_micro_batch()) return;  // accumulating locally
  Unit& u = *units_[unit];
  if (u.launched || u.arrived[param]) return;  // (a parameter used twice in one round: its hook fires twice)
  u.arrived[param] = true;
  round_open_ = true;
  if (++u.n_arrived == u.params.size()) launch_ready_units();
}

// Launch, in launch order, every unit whose gradients are complete, stopping at the first that is
// not: every rank then issues the same reductions in the same order.
void ShardedParameters::launch_ready_units() {
  while (next_launch_ < launch_order_.size()) {
    Unit& u = *units_[launch_order_[next_launch_]];
    if (u.n_arrived != u.params.size()) break;
    launch(launch_order_[next_launch_++]);
  }
  for (auto& r : in_flight_)
    if (r->work) r->work->test();  // let MPI move what is already under way
}

void ShardedParameters::launch(size_t unit) {
  Unit& u = *units_[unit];
  torch::NoGradGuard no_grad;
  const bool scatter = reduces_each_micro_batch();
  torch::Tensor send = scatter ? torch::empty({u.padded}, fp32()) : u.grad;
  for (size_t i = 0; i < u.params.size(); ++i) {  // pack (a parameter without a gradient counts as zeros)
    torch::Tensor dst = send.narrow(0, u.offsets[i], u.numels[i]);
    torch::Tensor& g = u.params[i].mutable_grad();
    if (g.defined())
      dst.copy_(g.reshape({-1}));
    else
      dst.zero_();
    g = torch::Tensor();  // the packed copy is the gradient now
  }
  send.narrow(0, u.numel, u.padded - u.numel).zero_();
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
  u.launched = true;
  std::fill(u.arrived.begin(), u.arrived.end(), false);
  u.n_arrived = 0;
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
  if (!round_open_) return;
  // Units whose gradients did not all arrive (unused parameters) are reduced now, in order.
  for (; next_launch_ < launch_order_.size(); ++next_launch_) launch(launch_order_[next_launch_]);
  next_launch_ = 0;
  for (auto& u : units_) u->launched = false;
  round_open_ = false;
}

void ShardedParameters::backward(const torch::Tensor& loss, bool last_micro_batch) {
  sync_ = last_micro_batch;
  if (sync_ || reduces_each_micro_batch()) round_open_ = true;
  loss.backward();
  close_round();
  if (!sync_ && reduces_each_micro_batch()) finish_reductions();  // the packed buffers go now
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

torch::Tensor ShardedParameters::step_on_device(double max_grad_norm, double grad_scale) {
  close_round();
  finish_reductions();
  torch::NoGradGuard no_grad;
  const bool whole = config_.strategy == ShardingStrategy::kReplicate;
  const bool low = low_precision();
  const std::vector<torch::Tensor> grads = update_gradients();
  std::vector<torch::Tensor> masters, ms, vs, copies;
  for (auto& u : units_) {
    masters.push_back(u->master);
    ms.push_back(u->m);
    vs.push_back(u->v);
    if (low) copies.push_back(whole ? u->full : u->compute_shard);
  }
  const torch::Tensor norm = global_grad_norm_on_device(grads, whole ? nullptr : comm_) * grad_scale;
  const torch::Tensor skip = torch::isfinite(norm).logical_not().to(torch::kFloat32);
  // clip_factor's min(1, max / (norm + 1e-6)) on the device; the kernel divides by the inverse.
  torch::Tensor factor = torch::full({1}, grad_scale, fp32());
  if (max_grad_norm > 0) factor = factor * torch::clamp_max(max_grad_norm / (norm + 1e-6), 1.0);
  adamw_step_on_device(masters, grads, ms, vs, device_steps_, config_.adamw, 1.0 / factor, skip, copies);
  for (size_t i = 0; i < units_.size(); ++i) {
    Unit& u = *units_[i];
    if (u.ema.defined())
      u.ema.lerp_(u.master, (1 - config_.ema_decay) * (1 - skip));  // ema += (1-d)(p-ema), not on a skip
    gather_updated_shards(u);
    u.grad.zero_();
  }
  return norm;
}

double ShardedParameters::step(double max_grad_norm, double grad_scale) {
  if (device_.is_cuda()) return step_on_device(max_grad_norm, grad_scale).item<double>();
  close_round();  // (a caller that ran loss.backward() itself: what backward() would have launched)
  finish_reductions();
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> grads = update_gradients();
  const bool whole = config_.strategy == ShardingStrategy::kReplicate;
  const bool low = low_precision();
  const double norm = global_grad_norm(grads, whole ? nullptr : comm_) * grad_scale;
  if (!std::isfinite(norm)) {  // every rank sees the same norm: all skip the update together
    for (auto& u : units_) u->grad.zero_();
    return norm;
  }
  ++step_;
  const double scale = grad_scale * clip_factor(norm, max_grad_norm);
  for (size_t i = 0; i < units_.size(); ++i) {
    Unit& u = *units_[i];
    // The fused update also writes the bf16 compute copy: all of it (replicate) or this rank's shard.
    const torch::Tensor copy = !low ? torch::Tensor() : whole ? u.full : u.compute_shard;
    adamw_step(u.master, grads[i], u.m, u.v, step_, config_.adamw, scale, copy);
    if (u.ema.defined()) ema_update(u.ema, u.master, config_.ema_decay);
    gather_updated_shards(u);
    u.grad.zero_();
  }
  return norm;
}

void ShardedParameters::zero_grad() {
  finish_reductions();
  for (auto& u : units_) {
    for (auto& p : u->params) p.mutable_grad() = torch::Tensor();
    u->grad.zero_();
    std::fill(u->arrived.begin(), u->arrived.end(), false);
    u->n_arrived = 0;
    u->launched = false;
  }
  next_launch_ = 0;
  round_open_ = false;
}

ShardedMemory ShardedParameters::memory() const {
  ShardedMemory m;
  const bool zero3 = config_.strategy == ShardingStrategy::kZero3;
  const int64_t compute_bytes = c10::elementSize(config_.compute_dtype);
  for (const auto& u : units_) {
    m.padded_elements += u->padded;
    // fp32 masters, plus what the model computes with when that is a separate copy: all of it
    // (held between steps unless zero3) and this rank's shard of it.
    if (!low_precision())
      m.param_bytes += 4 * (zero3 ? u->shard : u->padded);
    else
      m.param_bytes += 4 * u->master.numel() + compute_bytes * ((zero3 ? 0 : u->padded) + u->compute_shard.numel());
    m.grad_bytes += 4 * u->grad.numel();
    m.optimizer_state_bytes += 4 * (u->m.numel() + u->v.numel());
    if (u->ema.defined()) m.ema_bytes += 4 * u->ema.numel();
    if (zero3) m.transient_unit_bytes = std::max(m.transient_unit_bytes, compute_bytes * u->padded);
    if (reduces_each_micro_batch()) m.transient_unit_bytes = std::max(m.transient_unit_bytes, 4 * u->padded);
  }
  return m;
}

UnitShard ShardedParameters::unit_shard(size_t i) const {
  const Unit& u = *units_.at(i);
  UnitShard s{u.name, u.numel, u.padded, u.shard, {}, {}, {}, {}};
  const bool whole = config_.strategy == ShardingStrategy::kReplicate;
  auto mine = [&](const torch::Tensor& t) { return whole ? t.narrow(0, rank_ * u.shard, u.shard) : t; };
  s.params = mine(u.master);
  s.m = mine(u.m);
  s.v = mine(u.v);
  if (u.ema.defined()) s.ema = mine(u.ema);
  return s;
}

void ShardedParameters::load_unit(size_t i, const torch::Tensor& params, const torch::Tensor& m, const torch::Tensor& v,
                                  const torch::Tensor& ema) {
  Unit& u = *units_.at(i);
  for (const auto* t : {&params, &m, &v})
    if (!t->defined() || t->numel() != u.numel)
      throw Error("sharding", "unit " + u.name + ": state has " + std::to_string(t->defined() ? t->numel() : 0) +
                                  " elements, the model's unit has " + std::to_string(u.numel));
  if (u.ema.defined() && (!ema.defined() || ema.numel() != u.numel))
    throw Error("sharding", "unit " + u.name + ": EMA is on but the state has no EMA of the right size");
  torch::NoGradGuard no_grad;
  const bool whole = config_.strategy == ShardingStrategy::kReplicate;
  // Padded full-length copy, then this rank's part of it.
  auto padded = [&](const torch::Tensor& t) {
    torch::Tensor p = torch::zeros({u.padded});
    p.narrow(0, 0, u.numel).copy_(t.reshape({-1}).to(torch::kFloat32));
    return whole ? p : p.narrow(0, rank_ * u.shard, u.shard);
  };
  u.m.copy_(padded(m));
  u.v.copy_(padded(v));
  if (u.ema.defined()) u.ema.copy_(padded(ema));
  // Every rank has the full parameters here: no communication needed to set what the model uses.
  torch::Tensor p = torch::zeros({u.padded});
  p.narrow(0, 0, u.numel).copy_(params.reshape({-1}));
  u.master.copy_(whole ? p : p.narrow(0, rank_ * u.shard, u.shard));
  if (config_.strategy != ShardingStrategy::kZero3) u.full.copy_(p);
  if (u.compute_shard.defined()) u.compute_shard.copy_(u.master);
}

// Makes what the model computes with equal the masters again after they changed other than by an
// update (swap_ema): the compute copy, and under zero1/2 every rank's shard of the full
// parameters (a collective).
void ShardedParameters::publish(Unit& u) {
  torch::NoGradGuard no_grad;
  const bool low = low_precision();
  if (low) {
    if (config_.strategy == ShardingStrategy::kReplicate)
      u.full.copy_(u.master);
    else
      u.compute_shard.copy_(u.master);
  }
  gather_updated_shards(u);
}

// zero1/2: the full parameters the model computes with, from every rank's updated shard (nothing
// to do for replicate, which updates them in place, and zero3, which gathers before each run).
void ShardedParameters::gather_updated_shards(Unit& u) {
  if (config_.strategy != ShardingStrategy::kZero1 && config_.strategy != ShardingStrategy::kZero2) return;
  const bool low = low_precision();
  const torch::Tensor mine = low ? u.compute_shard : u.master.clone();  // (all_gather may not alias its input)
  if (comm_)
    comm_->all_gather(mine, u.full);
  else if (low)
    u.full.copy_(mine);
}

// The gradient each rank updates with: the whole reduced gradient (replicate), its slice (zero1),
// or its reduced shard (zero2/3).
std::vector<torch::Tensor> ShardedParameters::update_gradients() const {
  std::vector<torch::Tensor> grads;
  for (const auto& u : units_)
    grads.push_back(config_.strategy == ShardingStrategy::kZero1 ? u->grad.narrow(0, rank_ * u->shard, u->shard)
                                                                 : u->grad);
  return grads;
}

torch::Tensor ShardedParameters::gather_unit(size_t i, bool ema) const {
  const Unit& u = *units_.at(i);
  if (ema && !u.ema.defined()) throw Error("sharding", "gather_unit: EMA is off");
  if (!ema && config_.strategy != ShardingStrategy::kZero3 && !low_precision())
    return u.full.narrow(0, 0, u.numel).clone();
  return gather_full(u, ema ? u.ema : u.master);
}

// `mine` is this rank's part of a unit-sized flat tensor (the whole of it under replicate).
torch::Tensor ShardedParameters::gather_full(const Unit& u, const torch::Tensor& mine) const {
  if (config_.strategy == ShardingStrategy::kReplicate) return mine.narrow(0, 0, u.numel).clone();
  torch::Tensor full = torch::empty({u.padded}, fp32());
  if (comm_)
    comm_->all_gather(mine.contiguous(), full);
  else
    full.copy_(mine);
  return full.narrow(0, 0, u.numel).clone();
}

UnitShard ShardedParameters::gather_unit_state(size_t i) const {
  const Unit& u = *units_.at(i);
  UnitShard s{u.name, u.numel, u.padded, u.numel, gather_unit(i), gather_full(u, u.m), gather_full(u, u.v), {}};
  if (u.ema.defined()) s.ema = gather_full(u, u.ema);
  return s;
}

void ShardedParameters::swap_ema() {
  torch::NoGradGuard no_grad;
  for (auto& u : units_) {
    if (!u->ema.defined()) throw Error("sharding", "swap_ema: EMA is off (ema_decay = 0)");
    torch::Tensor tmp = u->master.clone();
    u->master.copy_(u->ema);
    u->ema.copy_(tmp);
    publish(*u);
  }
}

}  // namespace dtrainer::dist
