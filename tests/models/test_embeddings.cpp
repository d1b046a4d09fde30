// 2-D sin-cos positional embeddings and [S2]'s resampled grid.
#include <catch2/catch.hpp>

#include <cmath>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/embeddings.h"
#include "numpy_reference.h"

using namespace dtrainer;
using namespace dtrainer::models;

namespace {
torch::Tensor from_json(const nlohmann::json& j) {
  std::vector<double> flat;
  for (const auto& r : j)
    for (const auto& v : r) flat.push_back(v.get<double>());
  return torch::tensor(flat, torch::kFloat64).view({static_cast<int64_t>(j.size()), -1}).to(torch::kFloat32);
}
}  // namespace

TEST_CASE("positional embeddings match the numpy (MAE-convention) reference") {
  const auto ref = test::numpy_reference();
  CHECK(torch::allclose(sincos_pos_embed_2d(8, 3, 4, 1.0), from_json(ref["pos_resampled_s1"]), 1e-6, 1e-6));
  CHECK(torch::allclose(sincos_pos_embed_2d(8, 6, 8, 2.0), from_json(ref["pos_resampled_s2"]), 1e-6, 1e-6));
  CHECK(torch::allclose(sincos_pos_embed_2d(8, 3, 4, 1.0, PosEmbedGrid::kExtrapolate),
                        from_json(ref["pos_extrapolate"]), 1e-6, 1e-6));
}

TEST_CASE("the resampled grid keeps its extent when the resolution grows; extrapolation does not") {
  // Training at 16x16 tokens, sampling at 32x32 (scale 2): positions still span [0, 16].
  const torch::Tensor train = pos_embed_positions(16, 1.0, PosEmbedGrid::kResampled);
  const torch::Tensor big = pos_embed_positions(32, 2.0, PosEmbedGrid::kResampled);
  CHECK(train[-1].item<double>() == Approx(16.0));
  CHECK(big[-1].item<double>() == Approx(16.0));
  CHECK(big[0].item<double>() == 0.0);
  CHECK(pos_embed_positions(32, 2.0, PosEmbedGrid::kExtrapolate)[-1].item<double>() == 31.0);
  // Token (row 0, col 0) is at position 0: sin = 0, cos = 1 in every frequency.
  const torch::Tensor e = sincos_pos_embed_2d(16, 4, 4);
  CHECK(torch::allclose(e[0], torch::cat({torch::zeros(4), torch::ones(4), torch::zeros(4), torch::ones(4)})));
  // Column half of token (r, c) depends only on c, row half only on r.
  CHECK(torch::allclose(e[1 * 4 + 2].narrow(0, 0, 8), e[3 * 4 + 2].narrow(0, 0, 8)));
  CHECK(torch::allclose(e[2 * 4 + 1].narrow(0, 8, 8), e[2 * 4 + 3].narrow(0, 8, 8)));
  CHECK_THROWS_WITH(sincos_pos_embed_2d(6, 2, 2), Catch::Contains("pos_embed.dim"));
}
