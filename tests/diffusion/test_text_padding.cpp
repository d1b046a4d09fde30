// Text padding policies of [S2] on ragged prompts.
#include <catch2/catch.hpp>

#include <cmath>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/diffusion/text_padding.h"

using namespace dtrainer;
using namespace dtrainer::diffusion;
using torch::indexing::Slice;

namespace {
torch::Tensor prompt(int64_t L, int64_t D, int seed) {
  torch::manual_seed(seed);
  return torch::randn({L, D}) * torch::linspace(0.5, 3.0, D) + 1.0;  // channels with different spreads
}
}  // namespace

TEST_CASE("zero padding: prompt first, zeros after, mask marks the prompt") {
  TextPaddingConfig c;
  c.max_tokens = 10;
  const torch::Tensor p = prompt(4, 6, 1);
  const PaddedText out = pad_text({p, prompt(10, 6, 2)}, c, {0, 1}, 0);
  CHECK(out.tokens.sizes() == torch::IntArrayRef({2, 10, 6}));
  CHECK(torch::equal(out.tokens[0].index({Slice(0, 4)}), p));
  CHECK(out.tokens[0].index({Slice(4, 10)}).abs().sum().item<double>() == 0.0);
  CHECK(out.mask[0].sum().item<int64_t>() == 4);
  CHECK(out.mask[0].index({Slice(0, 4)}).all().item<bool>());
  CHECK(out.mask[1].all().item<bool>());
}

TEST_CASE("replicate padding cycles the prompt to length T, all attended") {
  TextPaddingConfig c;
  c.policy = TextPadding::kReplicate;
  c.max_tokens = 11;
  const torch::Tensor p = prompt(3, 5, 3);
  const PaddedText out = pad_text({p}, c, {0}, 0);
  for (int64_t j = 0; j < 11; ++j) CHECK(torch::equal(out.tokens[0][j], p[j % 3]));
  CHECK(out.mask.all().item<bool>());
}

TEST_CASE("noisy replicate: originals untouched, replicas cycle, noise std = sqrt(beta) * sqrt(m-1) * sigma_ch") {
  TextPaddingConfig c;
  c.policy = TextPadding::kNoisyReplicate;
  c.max_tokens = 77;
  c.beta_txt = 0.02;
  const int64_t L = 5, D = 16;
  const torch::Tensor p = prompt(L, D, 4);
  const int64_t m = (77 + L - 1) / L;  // 16 copies
  // sigma_ch computed independently: population std of each channel over the L tokens.
  std::vector<double> sigma(D);
  for (int64_t d = 0; d < D; ++d) {
    double mean = 0, sq = 0;
    for (int64_t j = 0; j < L; ++j) mean += p[j][d].item<double>() / L;
    for (int64_t j = 0; j < L; ++j) sq += std::pow(p[j][d].item<double>() - mean, 2) / L;
    sigma[d] = std::sqrt(sq);
  }
  // Many draws: 300 samples x 72 replica tokens per channel.
  const int64_t S = 300;
  std::vector<torch::Tensor> prompts(S, p);
  std::vector<int64_t> ids(S);
  for (int64_t i = 0; i < S; ++i) ids[i] = i;
  const PaddedText out = pad_text(prompts, c, ids, 2);
  CHECK(out.tokens.sizes() == torch::IntArrayRef({S, 77, D}));
  CHECK(out.mask.all().item<bool>());
  for (int64_t i = 0; i < S; ++i) REQUIRE(torch::equal(out.tokens[i].index({Slice(0, L)}), p));  // originals untouched
  std::vector<int64_t> cyc(77 - L);
  for (int64_t j = L; j < 77; ++j) cyc[j - L] = j % L;
  const torch::Tensor expected_clean = p.index({torch::tensor(cyc)});  // [72, D]
  const torch::Tensor noise = (out.tokens.index({Slice(), Slice(L, 77)}) - expected_clean).to(torch::kFloat64);
  const int64_t n = S * (77 - L);
  for (int64_t d = 0; d < D; ++d) {
    const torch::Tensor nd = noise.index({Slice(), Slice(), d}).flatten();
    const double want = std::sqrt(0.02) * std::sqrt(double(m - 1)) * sigma[d];  // ([S2]: beta_txt is a variance)
    INFO("channel " << d << " want std " << want);
    // replicas cycle the prompt: the residual is pure noise, mean 0 (5 standard errors)
    CHECK(nd.mean().item<double>() == Approx(0).margin(5 * want / std::sqrt(double(n))));
    // std of a sample std is std/sqrt(2n) = 0.5% here; 5 of them
    CHECK(nd.std().item<double>() == Approx(want).epsilon(5 / std::sqrt(2.0 * n)));
  }
}

TEST_CASE("noisy replicate is deterministic per (seed, step, sample) and truncates long prompts") {
  TextPaddingConfig c;
  c.policy = TextPadding::kNoisyReplicate;
  c.max_tokens = 8;
  const torch::Tensor p = prompt(3, 4, 5);
  const PaddedText a = pad_text({p}, c, {7}, 1), b = pad_text({p}, c, {7}, 1), d = pad_text({p}, c, {8}, 1);
  CHECK(torch::equal(a.tokens, b.tokens));
  CHECK_FALSE(torch::equal(a.tokens, d.tokens));
  const torch::Tensor longp = prompt(12, 4, 6);
  const PaddedText t = pad_text({longp}, c, {0}, 0);
  CHECK(torch::equal(t.tokens[0], longp.index({Slice(0, 8)})));  // L >= T: no copies, no noise
}

TEST_CASE("bad prompts are rejected with the prompt named") {
  TextPaddingConfig c;
  CHECK_THROWS_WITH(pad_text({torch::zeros({3, 4}), torch::zeros({3, 5})}, c, {0, 1}, 0),
                    Catch::Contains("prompts[1]"));
  CHECK_THROWS_WITH(pad_text({torch::zeros({0, 4})}, c, {0}, 0), Catch::Contains("prompts[0]"));
  CHECK_THROWS_WITH(pad_text({torch::zeros({3, 4})}, c, {}, 0), Catch::Contains("sample_ids"));
  CHECK_THROWS_WITH(parse_text_padding("text.padding", "mirror"), Catch::Contains("text.padding"));
}
