// Under mpirun: every rank builds the UNet from the same seed and gets bit-identical weights, and
// splitting a global batch over ranks gives the same predictions as one process running all of it.
#include <catch2/catch.hpp>

#include <mpi.h>

#include <torch/torch.h>

#include "dtrainer/models/unet.h"
#include "unet_test_specs.h"

using namespace dtrainer;
using namespace dtrainer::models;

namespace {
struct MpiSession {
  MpiSession() { MPI_Init(nullptr, nullptr); }
  ~MpiSession() { MPI_Finalize(); }
};
MpiSession mpi_session;  // Catch2's main runs between these

int rank() {
  int r;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world() {
  int w;
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return w;
}
}  // namespace

TEST_CASE("seeded initialisation is identical on every rank") {
  torch::manual_seed(1234);
  UNet net(test::small_sdxl());
  std::vector<float> flat;
  for (const auto& p : net->parameters()) {
    const torch::Tensor c = p.detach().contiguous().view(-1);
    flat.insert(flat.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  std::vector<float> root(flat);
  MPI_Bcast(root.data(), static_cast<int>(root.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
  CHECK(flat == root);
}

TEST_CASE("a global batch split over ranks predicts what one process predicts") {
  const int per_rank = 2, W = world(), r = rank();
  const UNetSpec spec = test::small_sdxl();
  torch::manual_seed(99);
  UNet net(spec);
  torch::NoGradGuard no_grad;
  // The global batch is drawn identically on all ranks from one seed.
  torch::manual_seed(5);
  const int64_t G = int64_t{per_rank} * W;
  const torch::Tensor x = torch::randn({G, spec.in_channels, 16, 16});
  const torch::Tensor t = torch::randint(0, 1000, {G}).to(torch::kFloat32);
  const torch::Tensor text = torch::randn({G, 6, spec.context_dim});
  const auto mine = torch::indexing::Slice(r * per_rank, (r + 1) * per_rank);
  const torch::Tensor local = net->forward(x.index({mine}), t.index({mine}), text.index({mine})).contiguous();
  torch::Tensor gathered = torch::empty({G, spec.out_channels, 16, 16});
  MPI_Allgather(local.data_ptr<float>(), static_cast<int>(local.numel()), MPI_FLOAT, gathered.data_ptr<float>(),
                static_cast<int>(local.numel()), MPI_FLOAT, MPI_COMM_WORLD);
  const torch::Tensor whole = net->forward(x, t, text);
  CHECK(torch::allclose(gathered, whole, 1e-4, 1e-5));
}
