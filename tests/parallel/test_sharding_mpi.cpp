// Sharded training is the same mathematics as one process: AdamW steps of a small UNet with the
// global batch split over the ranks (and over micro-batches) give the parameters of one process
// taking the full-batch steps with LibTorch's own torch::optim::AdamW — for every strategy.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>

#include <torch/torch.h>

#include "dtrainer/parallel/mpi_communicator.h"
#include "dtrainer/parallel/mpi_runtime.h"
#include "mpi_test_runtime.h"
#include "dtrainer/parallel/sharded_params.h"
#include "dtrainer/models/unet.h"
#include "models/unet_test_specs.h"

using namespace dtrainer;
using namespace dtrainer::parallel;

namespace {
MpiRuntime& runtime() { return test::mpi_runtime(); }

models::UNetSpec tiny_spec() {
  models::UNetSpec s = test::scaled_down("sdxl-c128");
  s.transformer_depth = {0, 1, 1};
  s.sample_size = 8;
  return s;
}

struct Data {
  torch::Tensor x, t, text, target;
};
Data global_batch(int64_t G, int step) {
  torch::manual_seed(1000 + step);  // identical on every rank
  return {torch::randn({G, 4, 8, 8}), torch::randint(0, 1000, {G}).to(torch::kFloat32), torch::randn({G, 5, 32}),
          torch::randn({G, 4, 8, 8})};
}

// eps = 1e-4, not 1e-8: Adam's first steps are ~lr * g / |g|, so a gradient element near zero
// turns fp32 summation-order noise into a +-lr step. Measured: one process accumulating two
// half-batches, with torch::optim::AdamW and eps 1e-8, already differs from the full-batch run by
// 1.1e-3 — no distribution involved. With eps 1e-4 tiny gradients step by lr * g / eps (noise stays
// tiny) and large ones are unaffected, so the comparison tests the sharding, not that conditioning.
constexpr double kEps = 1e-4;

AdamWConfig adamw() {
  AdamWConfig c;
  c.lr = 1e-3;
  c.beta2 = 0.95;
  c.eps = kEps;
  c.weight_decay = 0.03;
  return c;
}

ShardingConfig config(ShardingStrategy strategy, bool checkpointing = false) {
  ShardingConfig c;
  c.strategy = strategy;
  c.adamw = adamw();
  c.activation_checkpointing = checkpointing;
  return c;
}

// The reference: one process, the full batch, LibTorch's own AdamW.
// Steps listed in `without_backward` update with a zero gradient (no forward, no backward).
std::map<std::string, torch::Tensor> reference_parameters(int64_t G, int steps,
                                                          std::vector<int> without_backward = {}) {
  torch::manual_seed(11);
  models::UNet ref(tiny_spec());
  torch::optim::AdamW opt(ref->parameters(),
                          torch::optim::AdamWOptions(1e-3).betas({0.9, 0.95}).eps(kEps).weight_decay(0.03));
  for (int step = 0; step < steps; ++step) {
    const Data d = global_batch(G, step);
    opt.zero_grad();
    if (std::find(without_backward.begin(), without_backward.end(), step) != without_backward.end()) {
      for (auto& p : ref->parameters()) p.mutable_grad() = torch::zeros_like(p);
    } else {
      torch::mse_loss(ref->forward(d.x, d.t, d.text), d.target).backward();
    }
    opt.step();
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : ref->named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

const std::vector<ShardingStrategy> kStrategies = {ShardingStrategy::kReplicate, ShardingStrategy::kZero1,
                                                   ShardingStrategy::kZero2, ShardingStrategy::kZero3};

// The loss of the samples `mine` of a global batch (a rank's micro-batch).
torch::Tensor loss_of(models::UNet& net, const Data& d, const torch::indexing::Slice& mine) {
  return torch::mse_loss(net->forward(d.x.index({mine}), d.t.index({mine}), d.text.index({mine})),
                         d.target.index({mine}));
}

// Every parameter, gathered unit by unit (zero3 keeps none between steps), checked against the
// reference's parameter of the same name. names: parameter TensorImpl -> name.
void check_against_reference(const ShardedParameters& sharded, const std::vector<models::ModelUnit>& units,
                             const std::map<const c10::TensorImpl*, std::string>& names,
                             const std::map<std::string, torch::Tensor>& want) {
  for (size_t u = 0; u < units.size(); ++u) {
    const torch::Tensor flat = sharded.gather_unit(u);
    int64_t offset = 0;
    for (const auto& p : units[u].parameters) {
      const std::string& name = names.at(p.unsafeGetTensorImpl());
      INFO(name);
      const torch::Tensor& ref = want.at(name);
      CHECK(torch::allclose(flat.narrow(0, offset, ref.numel()).view(ref.sizes()), ref, 1e-5, 1e-6));
      offset += ref.numel();
    }
    CHECK(offset == flat.numel());
  }
}

std::map<const c10::TensorImpl*, std::string> parameter_names(models::UNet& net) {
  std::map<const c10::TensorImpl*, std::string> out;
  for (const auto& p : net->named_parameters()) out[p.value().unsafeGetTensorImpl()] = p.key();
  return out;
}
}  // namespace

TEST_CASE("replicate, zero1, zero2 and zero3 on N ranks equal one process's full-batch AdamW steps") {
  auto comm = make_mpi_communicator(runtime().comm());
  const int W = comm->world(), r = comm->rank();
  const int64_t G = 4;  // divisible by 2 and 4 ranks
  const int64_t b = G / W;
  const auto want = reference_parameters(G, 5);

  struct Case {
    ShardingStrategy strategy;
    bool checkpointing;
  };
  for (Case c : {Case{ShardingStrategy::kReplicate, false}, Case{ShardingStrategy::kZero1, false},
                 Case{ShardingStrategy::kZero2, false}, Case{ShardingStrategy::kZero3, false},
                 Case{ShardingStrategy::kReplicate, true}, Case{ShardingStrategy::kZero3, true}}) {
    INFO(sharding_strategy_name(c.strategy)
         << (c.checkpointing ? " + activation checkpointing" : "") << " on " << W << " ranks");
    torch::manual_seed(11);
    models::UNet net(tiny_spec());
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& p : net->named_parameters()) shapes[p.key()] = p.value().sizes().vec();
    const auto units = net->units();
    ShardedParameters sharded(*net, comm.get(), config(c.strategy, c.checkpointing));
    for (int step = 0; step < 5; ++step) {
      const Data d = global_batch(G, step);
      const auto mine = torch::indexing::Slice(r * b, (r + 1) * b);
      // Each rank's loss is the mean over its micro-batch; averaging gradients over ranks gives
      // the full-batch mean (equal micro-batches).
      sharded.backward(loss_of(net, d, mine));
      sharded.step();
    }
    if (c.strategy == ShardingStrategy::kZero3) {  // between steps a rank holds no full parameter
      for (const auto& p : net->parameters()) CHECK(p.numel() == 0);
    }
    const auto name_of = parameter_names(net);
    check_against_reference(sharded, units, name_of, want);
    // Memory: every unit is padded to a multiple of N; state is total / N under zero1-3, and so are
    // gradients under zero2-3 and parameters under zero3.
    const ShardedMemory mem = sharded.memory();
    int64_t padded = 0;
    for (size_t u = 0; u < units.size(); ++u) {
      const UnitShard s = sharded.unit_shard(u);
      int64_t n = 0;
      for (const auto& p : units[u].parameters)
        n += c10::multiply_integers(shapes.at(name_of.at(p.unsafeGetTensorImpl())));
      CHECK(s.numel == n);
      CHECK(s.padded == (n + W - 1) / W * W);
      CHECK(s.shard * W == s.padded);
      padded += s.padded;
    }
    const bool sharded_state = c.strategy != ShardingStrategy::kReplicate;
    const bool sharded_grads = c.strategy == ShardingStrategy::kZero2 || c.strategy == ShardingStrategy::kZero3;
    CHECK(mem.padded_elements == padded);
    CHECK(mem.optimizer_state_bytes == 8 * (sharded_state ? padded / W : padded));
    CHECK(mem.grad_bytes == 4 * (sharded_grads ? padded / W : padded));
    CHECK(mem.param_bytes == 4 * (c.strategy == ShardingStrategy::kZero3 ? padded / W : padded));
  }
}

TEST_CASE("gradient accumulation: two micro-batches per rank equal the full batch, for every strategy") {
  auto comm = make_mpi_communicator(runtime().comm());
  const int W = comm->world(), r = comm->rank();
  const int64_t G = 2 * W, b = 1;  // two micro-batches of one sample per rank
  const auto want = reference_parameters(G, 3);
  for (ShardingStrategy strategy : kStrategies) {
    INFO(sharding_strategy_name(strategy) << " on " << W << " ranks");
    torch::manual_seed(11);
    models::UNet net(tiny_spec());
    const auto name_of = parameter_names(net);
    const auto units = net->units();
    ShardedParameters sharded(*net, comm.get(), config(strategy));
    for (int step = 0; step < 3; ++step) {
      const Data d = global_batch(G, step);
      for (int k = 0; k < 2; ++k)  // rank r's samples: r * 2 + k
        sharded.backward(loss_of(net, d, torch::indexing::Slice(r * 2 + k, r * 2 + k + b)),
                         /*last_micro_batch=*/k == 1);
      sharded.step(0.0, 0.5);
    }
    check_against_reference(sharded, units, name_of, want);
  }
}

// The whole gradient buffers are not zeroed after an update (the next pack overwrites them): an
// update with no backward since the last one must still see a zero gradient, not the last one.
TEST_CASE("an update without a backward since the last one steps with a zero gradient, for every strategy") {
  auto comm = make_mpi_communicator(runtime().comm());
  const int W = comm->world(), r = comm->rank();
  const int64_t G = 4, b = G / W;
  const std::vector<int> without_backward = {1, 2};
  const auto want = reference_parameters(G, 4, without_backward);
  for (ShardingStrategy strategy : kStrategies) {
    INFO(sharding_strategy_name(strategy) << " on " << W << " ranks");
    torch::manual_seed(11);
    models::UNet net(tiny_spec());
    const auto name_of = parameter_names(net);
    const auto units = net->units();
    ShardedParameters sharded(*net, comm.get(), config(strategy));
    for (int step = 0; step < 4; ++step) {
      if (std::find(without_backward.begin(), without_backward.end(), step) == without_backward.end())
        sharded.backward(loss_of(net, global_batch(G, step), torch::indexing::Slice(r * b, (r + 1) * b)));
      sharded.step();
    }
    check_against_reference(sharded, units, name_of, want);
  }
}

TEST_CASE("gradient clipping uses the global norm across ranks") {
  auto comm = make_mpi_communicator(runtime().comm());
  torch::manual_seed(3);
  models::UNet net(tiny_spec());
  // The norm of the averaged gradient, computed independently first: all-reduce each grad and sum squares.
  const Data d = global_batch(comm->world(), 0);
  const auto mine = torch::indexing::Slice(comm->rank(), comm->rank() + 1);
  loss_of(net, d, mine).backward();
  double sq = 0;
  for (const auto& p : net->parameters()) {
    torch::Tensor g = p.grad().clone();
    comm->all_reduce(g, ReduceOp::kAvg);
    sq += g.to(torch::kFloat64).pow(2).sum().item<double>();
    p.mutable_grad() = torch::Tensor();
  }
  for (ShardingStrategy strategy : {ShardingStrategy::kZero2, ShardingStrategy::kZero3}) {
    torch::manual_seed(3);
    models::UNet fresh(tiny_spec());
    ShardedParameters sharded(*fresh, comm.get(), config(strategy));
    sharded.backward(loss_of(fresh, d, mine));
    CHECK(sharded.step(1e-3) == Approx(std::sqrt(sq)).epsilon(1e-5));
  }
}

namespace {
// The bf16 reference: one process, a bf16 copy of the model (module->to) computing, fp32 masters,
// the copy refreshed by rounding after each step. The gradient is the fp32 mean of the bf16
// gradients of the W slices of the batch — what W ranks compute. The update is dtrainer's
// adamw_step (equal to torch::optim::AdamW, test_adamw): LibTorch's AdamW differs from it by an
// fp32 ulp here and there, and in bf16 that is no longer noise — an ulp that flips the rounding
// of a weight changes the next forward by 2^-9 relative, which Adam amplifies step by step.
std::map<std::string, torch::Tensor> reference_bf16_parameters(int64_t G, int W, int steps) {
  torch::manual_seed(11);
  models::UNet ref(tiny_spec());
  std::vector<std::string> names;
  std::vector<torch::Tensor> masters, grads, m, v;
  for (const auto& p : ref->named_parameters()) {
    names.push_back(p.key());
    masters.push_back(p.value().detach().clone().reshape({-1}));
    m.push_back(torch::zeros_like(masters.back()));
    v.push_back(torch::zeros_like(masters.back()));
  }
  ref->to(torch::kBFloat16);
  const std::vector<torch::Tensor> params = ref->parameters();
  const int64_t b = G / W;
  for (int step = 0; step < steps; ++step) {
    const Data d = global_batch(G, step);
    grads.clear();
    for (const auto& p : masters) grads.push_back(torch::zeros_like(p));
    for (int k = 0; k < W; ++k) {
      const auto slice = torch::indexing::Slice(k * b, (k + 1) * b);
      ref->zero_grad();
      const torch::Tensor out = ref->forward(d.x.index({slice}).to(torch::kBFloat16), d.t.index({slice}),
                                             d.text.index({slice}).to(torch::kBFloat16));
      torch::mse_loss(out.to(torch::kFloat32), d.target.index({slice})).backward();
      for (size_t i = 0; i < params.size(); ++i) grads[i] += params[i].grad().to(torch::kFloat32).reshape({-1});
    }
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      adamw_step(masters[i], grads[i] / W, m[i], v[i], step + 1, adamw());
      params[i].copy_(masters[i].view(params[i].sizes()));
    }
  }
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < names.size(); ++i) out[names[i]] = masters[i].view(params[i].sizes());
  return out;
}
}  // namespace

TEST_CASE(
    "bf16 compute copy: the model computes in bf16, fp32 masters match a bf16 reference, copies are the rounded "
    "masters") {
  auto comm = make_mpi_communicator(runtime().comm());
  const int W = comm->world(), r = comm->rank();
  const int64_t G = 4, b = G / W;
  const int steps = 3;
  const auto want = reference_bf16_parameters(G, W, steps);
  const auto want_fp32 = reference_parameters(G, steps);
  // Activation checkpointing sums the gradient of an input shared by many units (the time
  // embedding) in another order, which in bf16 rounds differently: those runs are compared with
  // each other to fp32 precision, and with the reference as a bf16 run. zero3 without it runs the
  // recorded graph, so it matches the reference as replicate does.
  struct Case {
    ShardingStrategy strategy;
    bool checkpointing;
  };
  std::vector<torch::Tensor> checkpointed_masters;  // replicate + checkpointing's, unit by unit
  for (Case c : {Case{ShardingStrategy::kReplicate, false}, Case{ShardingStrategy::kZero1, false},
                 Case{ShardingStrategy::kZero2, false}, Case{ShardingStrategy::kZero3, false},
                 Case{ShardingStrategy::kReplicate, true}, Case{ShardingStrategy::kZero3, true}}) {
    const ShardingStrategy strategy = c.strategy;
    INFO(sharding_strategy_name(strategy)
         << (c.checkpointing ? " + activation checkpointing" : "") << " with a bf16 compute copy on " << W << " ranks");
    torch::manual_seed(11);
    models::UNet net(tiny_spec());
    const auto name_of = parameter_names(net);
    const auto units = net->units();
    ShardingConfig sc = config(strategy, c.checkpointing);
    sc.compute_dtype = torch::kBFloat16;
    ShardedParameters sharded(*net, comm.get(), sc);
    for (int step = 0; step < steps; ++step) {
      const Data d = global_batch(G, step);
      const auto mine = torch::indexing::Slice(r * b, (r + 1) * b);
      const torch::Tensor out = net->forward(d.x.index({mine}).to(torch::kBFloat16), d.t.index({mine}),
                                             d.text.index({mine}).to(torch::kBFloat16));
      CHECK(out.scalar_type() == torch::kBFloat16);  // the whole forward ran in bf16
      sharded.backward(torch::mse_loss(out.to(torch::kFloat32), d.target.index({mine})));
      sharded.step();
    }
    // Masters against the bf16 reference; and the run really computed in bf16: it is about as
    // far from the fp32 reference as the bf16 reference is.
    double diff = 0, diff_fp32 = 0, moved = 0;
    for (size_t u = 0; u < units.size(); ++u) {
      const torch::Tensor flat = sharded.gather_unit(u);
      CHECK(flat.scalar_type() == torch::kFloat32);
      int64_t offset = 0;
      for (const auto& p : units[u].parameters) {
        const std::string& name = name_of.at(p.unsafeGetTensorImpl());
        const torch::Tensor& ref = want.at(name);
        const torch::Tensor got = flat.narrow(0, offset, ref.numel()).view(ref.sizes());
        INFO(name << ": max |difference| " << (got - ref).abs().max().item<double>());
        if (!c.checkpointing) CHECK(torch::allclose(got, ref, 1e-4, 1e-6));
        diff += (got - ref).pow(2).sum().item<double>();
        diff_fp32 += (got - want_fp32.at(name)).pow(2).sum().item<double>();
        moved += (ref - want_fp32.at(name)).pow(2).sum().item<double>();
        if (strategy != ShardingStrategy::kZero3) {  // the module's parameter is the rounded master, bit for bit
          CHECK(p.scalar_type() == torch::kBFloat16);
          CHECK(torch::equal(p.detach(), got.to(torch::kBFloat16)));
        }
        offset += ref.numel();
      }
      if (c.checkpointing && strategy == ShardingStrategy::kReplicate)
        checkpointed_masters.push_back(flat);
      else if (c.checkpointing)
        CHECK(torch::allclose(flat, checkpointed_masters[u], 1e-4, 1e-6));
    }
    INFO("|run - bf16 reference| = " << std::sqrt(diff) << ", |run - fp32 reference| = " << std::sqrt(diff_fp32)
                                     << ", |bf16 reference - fp32 reference| = " << std::sqrt(moved));
    CHECK(std::sqrt(diff) < 0.5 * std::sqrt(moved));
    CHECK(std::sqrt(diff_fp32) > 0.5 * std::sqrt(moved));
    // Memory: fp32 masters (all, or the shard) + the bf16 copy (all of it unless zero3) + its shard.
    const ShardedMemory mem = sharded.memory();
    const int64_t P = mem.padded_elements;
    switch (strategy) {
      case ShardingStrategy::kReplicate: CHECK(mem.param_bytes == 4 * P + 2 * P); break;
      case ShardingStrategy::kZero3: CHECK(mem.param_bytes == 4 * P / W + 2 * P / W); break;
      default: CHECK(mem.param_bytes == 4 * P / W + 2 * P + 2 * P / W);
    }
  }
}
