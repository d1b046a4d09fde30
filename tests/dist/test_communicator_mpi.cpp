// The MPI communicator under mpirun: every collective against values each rank computes locally.
#include <catch2/catch.hpp>

#include <mpi.h>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/dist/mpi_communicator.h"
#include "dtrainer/dist/mpi_runtime.h"
#include "mpi_test_runtime.h"

using namespace dtrainer;
using namespace dtrainer::dist;

namespace {
MpiRuntime& runtime() { return test::mpi_runtime(); }
Communicator& comm() {
  static std::unique_ptr<Communicator> c = make_mpi_communicator(runtime().comm());
  return *c;
}
// What rank r contributes: a deterministic function of (r, index).
torch::Tensor contribution(int r, int64_t n, torch::ScalarType dtype = torch::kFloat32) {
  return (torch::arange(n, torch::kFloat64) * 0.5 + 100.0 * r + 1.0).to(dtype);
}
torch::Tensor sum_over_ranks(int64_t n, int world) {
  torch::Tensor s = torch::zeros({n}, torch::kFloat64);
  for (int r = 0; r < world; ++r) s += contribution(r, n, torch::kFloat64);
  return s;
}
}  // namespace

TEST_CASE("runtime: ranks, node-local ranks") {
  CHECK(runtime().world() >= 2);
  CHECK(runtime().local_world() == runtime().world());  // one node here
  CHECK(runtime().local_rank() == runtime().rank());
  CHECK(comm().world() == runtime().world());
}

TEST_CASE("all_reduce sum and average, sync and async") {
  const int W = comm().world(), r = comm().rank();
  torch::Tensor a = contribution(r, 1000), b = contribution(r, 77);
  auto wa = comm().all_reduce(a, ReduceOp::kSum, true);
  auto wb = comm().all_reduce(b, ReduceOp::kAvg, true);
  wb->wait();
  wa->wait();
  wa->wait();  // idempotent
  CHECK(torch::allclose(a.to(torch::kFloat64), sum_over_ranks(1000, W)));
  CHECK(torch::allclose(b.to(torch::kFloat64), sum_over_ranks(77, W) / W));
}

TEST_CASE("reduce_scatter gives rank r the reduced chunk r; all_gather concatenates in rank order") {
  const int W = comm().world(), r = comm().rank();
  const int64_t n = 33;
  torch::Tensor out = torch::empty({n});
  comm().reduce_scatter(contribution(r, n * W), out, ReduceOp::kSum);
  CHECK(torch::allclose(out.to(torch::kFloat64), sum_over_ranks(n * W, W).narrow(0, r * n, n)));
  torch::Tensor gathered = torch::empty({n * W});
  comm().all_gather(contribution(r, n), gathered);
  for (int k = 0; k < W; ++k) CHECK(torch::equal(gathered.narrow(0, k * n, n), contribution(k, n)));
  CHECK_THROWS_WITH(comm().reduce_scatter(torch::zeros({5}), torch::zeros({2}), ReduceOp::kSum), Catch::Contains("communicator.reduce_scatter"));
}

TEST_CASE("broadcast from a chosen root") {
  const int W = comm().world(), r = comm().rank();
  torch::Tensor t = contribution(r, 10);
  comm().broadcast(t, W - 1);
  CHECK(torch::equal(t, contribution(W - 1, 10)));
}

TEST_CASE("bf16 is reduced in fp32: the result is the rounded exact sum, not a bf16 accumulation") {
  const int W = comm().world(), r = comm().rank();
  // 256 + r/4: bf16 holds 8 mantissa bits, so adding the small parts in bf16 would drop them.
  torch::Tensor t = torch::full({64}, 256.0 + 0.25 * r).to(torch::kBFloat16);
  comm().all_reduce(t, ReduceOp::kSum);
  double exact = 0;
  for (int k = 0; k < W; ++k) exact += static_cast<double>(torch::tensor(256.0 + 0.25 * k).to(torch::kBFloat16).item<float>());
  CHECK(t.scalar_type() == torch::kBFloat16);
  CHECK(t[0].item<float>() == torch::tensor(exact).to(torch::kBFloat16).item<float>());
}

TEST_CASE("non-CPU or non-contiguous tensors are refused with the operation named") {
  torch::Tensor strided = torch::zeros({4, 4}).t();
  CHECK_THROWS_WITH(comm().all_reduce(strided, ReduceOp::kSum), Catch::Contains("communicator.all_reduce") && Catch::Contains("contiguous"));
}
