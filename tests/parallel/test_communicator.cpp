// The communicator backends under mpirun: every collective against values each rank computes
// locally. One source, two executables: the MPI backend on CPU tensors, and (when the build has
// NCCL) the NCCL backend on each rank's GPU — which exits 77, reported by ctest as skipped, on a
// machine without one.
#ifdef DT_TEST_NCCL
#define CATCH_CONFIG_RUNNER
#endif
#include <catch2/catch.hpp>

#include <mpi.h>

#include <cstdio>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/parallel/local_device.h"
#include "dtrainer/parallel/mpi_communicator.h"
#include "dtrainer/parallel/mpi_runtime.h"
#include "dtrainer/parallel/nccl_communicator.h"
#include "mpi_test_runtime.h"

using namespace dtrainer;
using namespace dtrainer::parallel;

namespace {
MpiRuntime& runtime() { return test::mpi_runtime(); }
#ifdef DT_TEST_NCCL
torch::Device device() { return local_device(runtime()); }
#else
torch::Device device() { return torch::kCPU; }
#endif
Communicator& comm() {
  static std::unique_ptr<Communicator> c = make_communicator(runtime(), device());
  return *c;
}
// What rank r contributes: a deterministic function of (r, index), on this rank's device.
torch::Tensor contribution(int r, int64_t n, torch::ScalarType dtype = torch::kFloat32) {
  return (torch::arange(n, torch::kFloat64) * 0.5 + 100.0 * r + 1.0).to(dtype).to(device());
}
torch::Tensor sum_over_ranks(int64_t n, int world) {
  torch::Tensor s = torch::zeros({n}, torch::kFloat64);
  for (int r = 0; r < world; ++r) s += contribution(r, n, torch::kFloat64).cpu();
  return s;
}
torch::Tensor host64(const torch::Tensor& t) { return t.cpu().to(torch::kFloat64); }
}  // namespace

TEST_CASE("runtime: ranks, node-local ranks, backend for the device") {
  CHECK(runtime().world() >= 1);
  CHECK(runtime().local_world() == runtime().world());  // one node here
  CHECK(runtime().local_rank() == runtime().rank());
  CHECK(comm().world() == runtime().world());
  CHECK(comm().rank() == runtime().rank());
  CHECK(std::string(comm().backend()) == (device().is_cuda() ? "nccl" : "mpi"));
}

TEST_CASE("all_reduce sum and average, sync and async") {
  const int W = comm().world(), r = comm().rank();
  torch::Tensor a = contribution(r, 1000), b = contribution(r, 77);
  auto wa = comm().all_reduce(a, ReduceOp::kSum, true);
  auto wb = comm().all_reduce(b, ReduceOp::kAvg, true);
  wb->wait();
  wa->wait();
  wa->wait();  // idempotent
  CHECK(torch::allclose(host64(a), sum_over_ranks(1000, W)));
  CHECK(torch::allclose(host64(b), sum_over_ranks(77, W) / W));
}

TEST_CASE("async work completes: test() turns true without wait()") {
  const int W = comm().world(), r = comm().rank();
  torch::Tensor a = contribution(r, 4096);
  auto w = comm().all_reduce(a, ReduceOp::kSum, true);
  while (!w->test()) {
  }
  w->wait();
  CHECK(torch::allclose(host64(a), sum_over_ranks(4096, W)));
}

TEST_CASE("reduce_scatter gives rank r the reduced chunk r; all_gather concatenates in rank order") {
  const int W = comm().world(), r = comm().rank();
  const int64_t n = 33;
  torch::Tensor out = torch::empty({n}, device());
  comm().reduce_scatter(contribution(r, n * W), out, ReduceOp::kSum);
  CHECK(torch::allclose(host64(out), sum_over_ranks(n * W, W).narrow(0, r * n, n)));
  torch::Tensor gathered = torch::empty({n * W}, device());
  comm().all_gather(contribution(r, n), gathered);
  for (int k = 0; k < W; ++k) CHECK(torch::equal(gathered.narrow(0, k * n, n).cpu(), contribution(k, n).cpu()));
  CHECK_THROWS_WITH(comm().reduce_scatter(torch::zeros({5 * W}, device()), torch::zeros({2}, device()), ReduceOp::kSum),
                    Catch::Contains("communicator.reduce_scatter"));
}

TEST_CASE("broadcast from a chosen root") {
  const int W = comm().world(), r = comm().rank();
  torch::Tensor t = contribution(r, 10);
  comm().broadcast(t, W - 1);
  CHECK(torch::equal(t.cpu(), contribution(W - 1, 10).cpu()));
}

TEST_CASE("bf16 is reduced in fp32: the result is the rounded exact sum, not a bf16 accumulation") {
  const int W = comm().world(), r = comm().rank();
  // 256 + r/4: bf16 holds 8 mantissa bits, so adding the small parts in bf16 would drop them.
  torch::Tensor t = torch::full({64}, 256.0 + 0.25 * r).to(torch::kBFloat16).to(device());
  comm().all_reduce(t, ReduceOp::kSum);
  double exact = 0;
  for (int k = 0; k < W; ++k)
    exact += static_cast<double>(torch::tensor(256.0 + 0.25 * k).to(torch::kBFloat16).item<float>());
  CHECK(t.scalar_type() == torch::kBFloat16);
  CHECK(t[0].item<float>() == torch::tensor(exact).to(torch::kBFloat16).item<float>());
}

TEST_CASE("bf16 all_gather moves the bits unchanged") {
  const int W = comm().world(), r = comm().rank();
  torch::Tensor mine = contribution(r, 16, torch::kBFloat16);
  torch::Tensor all = torch::empty({16 * W}, mine.options());
  comm().all_gather(mine, all);
  for (int k = 0; k < W; ++k)
    CHECK(torch::equal(all.narrow(0, k * 16, 16).cpu(), contribution(k, 16, torch::kBFloat16).cpu()));
}

TEST_CASE("a duplicate orders its collectives independently and gives the same results") {
  const int W = comm().world(), r = comm().rank();
  std::unique_ptr<Communicator> other = comm().duplicate();
  CHECK(other->world() == W);
  torch::Tensor a = contribution(r, 100), b = contribution(r, 50);
  auto wa = comm().all_reduce(a, ReduceOp::kSum, true);
  auto wb = other->all_reduce(b, ReduceOp::kSum, true);
  wb->wait();
  wa->wait();
  CHECK(torch::allclose(host64(a), sum_over_ranks(100, W)));
  CHECK(torch::allclose(host64(b), sum_over_ranks(50, W)));
}

TEST_CASE("tensors on another device, non-contiguous ones or mismatched dtypes are refused with the operation named") {
  torch::Tensor strided = torch::zeros({4, 4}, device()).t();
  CHECK_THROWS_WITH(comm().all_reduce(strided, ReduceOp::kSum),
                    Catch::Contains("communicator.all_reduce") && Catch::Contains("contiguous"));
  const int W = comm().world();
  CHECK_THROWS_WITH(
      comm().all_gather(torch::zeros({2}, device()).to(torch::kBFloat16), torch::zeros({2 * W}, device())),
      Catch::Contains("communicator.all_gather") && Catch::Contains("BFloat16"));
  if (device().is_cuda()) {
    CHECK_THROWS_WITH(comm().all_reduce(torch::zeros({4}), ReduceOp::kSum),
                      Catch::Contains("communicator.all_reduce") && Catch::Contains("CUDA"));
  }
}

#ifdef DT_TEST_NCCL
// Skips (exit 77 on every rank) where no rank can have a GPU: LibTorch without CUDA, or no device.
int main(int argc, char** argv) {
  MpiRuntime& rt = runtime();
  if (!torch::cuda::is_available()) {
    if (rt.rank() == 0) std::printf("no CUDA device visible to LibTorch: the NCCL backend cannot run here (skipped)\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
#endif

TEST_CASE("select_device: cpu, auto (a GPU where LibTorch sees one), cuda (an error without), anything else refused") {
  const bool gpus = torch::cuda::device_count() > 0;
  CHECK(select_device(runtime(), "cpu") == torch::Device(torch::kCPU));
  const torch::Device chosen = select_device(runtime(), "auto");
  CHECK(chosen.is_cuda() == gpus);
  if (gpus) {
    CHECK(chosen.index() == runtime().local_rank());
    if (nccl_built()) CHECK(select_device(runtime(), "cuda") == chosen);
  } else {
    CHECK_THROWS_WITH(select_device(runtime(), "cuda"),
                      Catch::Contains("device") && Catch::Contains("no CUDA device") &&
                          Catch::Contains("rank " + std::to_string(runtime().rank())));
  }
  CHECK_THROWS_WITH(select_device(runtime(), "tpu"), Catch::Contains("'tpu'"));
}
