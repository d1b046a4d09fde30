// zero3's life cycle of a unit's gathered parameters, as PyTorch FSDP runs it: gathered for the
// forward and freed after it, gathered again when the unit's backward begins and freed once its
// gradients are in; the unit runs once per step (no recomputation) unless activation checkpointing
// is asked for. Checked on a two-unit model whose awkward corners are deliberate: a unit with an
// output the loss does not use, a parameter that gets no gradient, a unit that throws.
#include <catch2/catch.hpp>

#include <memory>
#include <stdexcept>

#include <torch/torch.h>

#include "dtrainer/parallel/mpi_communicator.h"
#include "dtrainer/parallel/sharded_params.h"
#include "mpi_test_runtime.h"
#include "dtrainer/models/unit_runner.h"

using namespace dtrainer;
using namespace dtrainer::parallel;

namespace {

// Counts the all-gathers issued on it: under zero3 those are the parameter gathers.
class CountingCommunicator final : public Communicator {
 public:
  explicit CountingCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int gathers = 0;
  int rank() const override { return inner_->rank(); }
  int world() const override { return inner_->world(); }
  const char* backend() const override { return inner_->backend(); }
  std::shared_ptr<Work> all_reduce(torch::Tensor t, ReduceOp op, bool async) override {
    return inner_->all_reduce(t, op, async);
  }
  std::shared_ptr<Work> reduce_scatter(torch::Tensor in, torch::Tensor out, ReduceOp op, bool async) override {
    return inner_->reduce_scatter(in, out, op, async);
  }
  std::shared_ptr<Work> all_gather(torch::Tensor in, torch::Tensor out, bool async) override {
    ++gathers;
    return inner_->all_gather(in, out, async);
  }
  std::shared_ptr<Work> broadcast(torch::Tensor t, int root, bool async) override {
    return inner_->broadcast(t, root, async);
  }
  void barrier() override { inner_->barrier(); }
  std::unique_ptr<Communicator> duplicate() const override { return inner_->duplicate(); }

 private:
  std::unique_ptr<Communicator> inner_;
};

// Unit 0 ("stem"): Linear 6 -> 8, two outputs: tanh(h), which unit 1 reads, and h's row sums, which
// the loss ignores. Unit 1 ("head"): Linear 8 -> 3 and a Linear 2 -> 2 it never calls (no gradient).
struct TwoUnitNetImpl : torch::nn::Module, models::UnitModel {
  torch::nn::Linear stem{nullptr}, head{nullptr}, idle{nullptr};
  int stem_runs = 0, head_runs = 0;
  bool head_throws = false;

  TwoUnitNetImpl() {
    stem = register_module("stem", torch::nn::Linear(6, 8));
    head = register_module("head", torch::nn::Linear(8, 3));
    idle = register_module("idle", torch::nn::Linear(2, 2));
    register_unit("stem", {stem.ptr()});
    register_unit("head", {head.ptr(), idle.ptr()});
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const auto h = run_unit(0,
                            [this](const std::vector<torch::Tensor>& in) -> std::vector<torch::Tensor> {
                              ++stem_runs;
                              const torch::Tensor y = stem(in[0]);
                              return {torch::tanh(y), y.sum(1)};
                            },
                            {x});
    return run_unit(1,
                    [this](const std::vector<torch::Tensor>& in) -> std::vector<torch::Tensor> {
                      ++head_runs;
                      if (head_throws) throw std::runtime_error("head failed");
                      return {head(in[0])};
                    },
                    {h[0]})[0];
  }
};
TORCH_MODULE(TwoUnitNet);

ShardingConfig config(ShardingStrategy strategy, bool checkpointing = false) {
  ShardingConfig c;
  c.strategy = strategy;
  c.adamw.lr = 1e-2;
  c.adamw.eps = 1e-4;  // (see test_sharding_mpi: tiny gradients must not turn order noise into steps)
  c.activation_checkpointing = checkpointing;
  return c;
}

torch::Tensor batch(int step, int rank) {
  torch::manual_seed(500 + 10 * step + rank);
  return torch::randn({3, 6});
}
torch::Tensor loss_of(TwoUnitNet& net, int step, int rank) { return net->forward(batch(step, rank)).pow(2).mean(); }

// Both units' full parameters after `steps` steps of `strategy` on every rank, the units' runs and
// the all-gathers the steps issued; `between` runs between each forward and its backward.
struct Run {
  std::vector<torch::Tensor> units;
  int stem_runs = 0, head_runs = 0, gathers = 0;
};
Run train(ShardingStrategy strategy, bool checkpointing, int steps,
          const std::function<void(TwoUnitNet&, ShardedParameters&)>& between = nullptr) {
  CountingCommunicator comm(make_mpi_communicator(test::mpi_runtime().comm()));
  torch::manual_seed(7);
  TwoUnitNet net;
  ShardedParameters sharded(*net, &comm, config(strategy, checkpointing));
  for (int step = 0; step < steps; ++step) {
    const torch::Tensor loss = loss_of(net, step, comm.rank());
    if (between) between(net, sharded);
    sharded.backward(loss);
    sharded.step();
  }
  Run r{{}, net->stem_runs, net->head_runs, comm.gathers};
  for (size_t u = 0; u < sharded.num_units(); ++u) r.units.push_back(sharded.gather_unit(u));
  return r;
}

void check_equal(const Run& a, const Run& b) {
  REQUIRE(a.units.size() == b.units.size());
  for (size_t u = 0; u < a.units.size(); ++u) {
    INFO("unit " << u);
    CHECK(torch::allclose(a.units[u], b.units[u], 1e-5, 1e-7));
  }
}

}  // namespace

TEST_CASE("zero3 runs each unit once a step and gathers it twice; with activation checkpointing it runs twice") {
  const int steps = 3;
  const Run replicate = train(ShardingStrategy::kReplicate, false, steps);
  const Run zero3 = train(ShardingStrategy::kZero3, false, steps);
  const Run zero3_ckpt = train(ShardingStrategy::kZero3, true, steps);
  check_equal(zero3, replicate);
  check_equal(zero3_ckpt, replicate);
  // Forward once, backward from the recorded graph: one run, a gather for each.
  CHECK(zero3.stem_runs == steps);
  CHECK(zero3.head_runs == steps);
  CHECK(zero3.gathers == 2 * 2 * steps);
  // Checkpointed: forward without a graph, then the recomputation in backward, each gathered.
  CHECK(zero3_ckpt.stem_runs == 2 * steps);
  CHECK(zero3_ckpt.head_runs == 2 * steps);
  CHECK(zero3_ckpt.gathers == 2 * 2 * steps);
}

TEST_CASE("between a zero3 forward and its backward no unit holds its gathered parameters") {
  const int W = test::mpi_runtime().world();
  int64_t held_after_forward = -1, shards = 0;
  int64_t params_kept = 0;
  const Run zero3 = train(ShardingStrategy::kZero3, false, 2, [&](TwoUnitNet& net, ShardedParameters& s) {
    held_after_forward = s.memory().param_bytes;
    shards = 0;
    for (size_t u = 0; u < s.num_units(); ++u) shards += s.unit_shard(u).shard;
    // The parameters keep their shapes for the backward (what autograd saved points at them).
    params_kept = 0;
    for (const auto& p : net->parameters()) params_kept += p.numel();
  });
  // Only the fp32 master shards: 4 bytes an element, padded / W elements per unit.
  CHECK(held_after_forward == 4 * shards);
  CHECK(params_kept == (6 * 8 + 8) + (8 * 3 + 3) + (2 * 2 + 2));
  CHECK(shards * W >= params_kept);
  check_equal(zero3, train(ShardingStrategy::kReplicate, false, 2));
}

TEST_CASE("after a zero3 step, and after a forward whose backward never came, the parameters are empty again") {
  CountingCommunicator comm(make_mpi_communicator(test::mpi_runtime().comm()));
  torch::manual_seed(7);
  TwoUnitNet net;
  ShardedParameters sharded(*net, &comm, config(ShardingStrategy::kZero3));
  auto all_empty = [&] {
    for (const auto& p : net->parameters())
      if (p.numel() != 0) return false;
    return sharded.memory().param_bytes ==
           4 * static_cast<int64_t>(sharded.unit_shard(0).shard + sharded.unit_shard(1).shard);
  };
  CHECK(all_empty());
  sharded.backward(loss_of(net, 0, comm.rank()));
  sharded.step();
  CHECK(all_empty());
  { (void)loss_of(net, 1, comm.rank()); }  // a forward with a graph, dropped: no backward reaches the units
  sharded.step();                          // (a zero-gradient update)
  CHECK(all_empty());
  {
    torch::NoGradGuard no_grad;  // evaluation: no graph, freed at once
    (void)net->forward(batch(2, comm.rank()));
  }
  CHECK(all_empty());
}

TEST_CASE("a unit that throws in a zero3 forward leaves the state usable: the next steps equal replicate's") {
  auto fail_once = [](ShardingStrategy strategy) {
    CountingCommunicator comm(make_mpi_communicator(test::mpi_runtime().comm()));
    torch::manual_seed(7);
    TwoUnitNet net;
    ShardedParameters sharded(*net, &comm, config(strategy));
    net->head_throws = true;
    CHECK_THROWS_WITH(loss_of(net, 0, comm.rank()), "head failed");
    net->head_throws = false;
    sharded.zero_grad();
    for (int step = 0; step < 2; ++step) {
      sharded.backward(loss_of(net, step, comm.rank()));
      sharded.step();
    }
    Run r;
    for (size_t u = 0; u < sharded.num_units(); ++u) r.units.push_back(sharded.gather_unit(u));
    return r;
  };
  check_equal(fail_once(ShardingStrategy::kZero3), fail_once(ShardingStrategy::kReplicate));
}
