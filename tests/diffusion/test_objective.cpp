// The training objective: noising, targets, weights and dropout against their definitions.
#include <catch2/catch.hpp>

#include <cmath>
#include <numeric>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/diffusion/objective.h"

using namespace dtrainer;
using namespace dtrainer::diffusion;

namespace {
std::vector<int64_t> iota(int64_t from, int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}
Objective make(Target target, LossWeighting w = LossWeighting::kNone, uint64_t seed = 11) {
  ObjectiveConfig c;
  c.target = target;
  c.weighting = w;
  c.seed = seed;
  return Objective(c, NoiseSchedule::make({}));
}
}  // namespace

TEST_CASE("forward noising: x_t = sqrt(abar) x0 + sqrt(1-abar) eps with the keyed draws, and the EDM form agrees") {
  const Objective obj = make(Target::kEps);
  torch::manual_seed(0);
  const torch::Tensor x0 = torch::randn({4, 3, 8, 8});
  const auto ids = iota(100, 4);
  const NoisedBatch b = obj.make_batch(x0, ids, 7);
  for (int64_t i = 0; i < 4; ++i) {
    const int64_t t = obj.draw_timestep(ids[i], 7);
    const torch::Tensor eps = obj.draw_noise({3, 8, 8}, ids[i], 7);
    const double a = obj.schedule().abar(t), sig = obj.schedule().sigma(t);
    CHECK(b.t_model[i].item<float>() == static_cast<float>(t));
    CHECK(torch::allclose(b.target[i], eps));
    CHECK(torch::allclose(b.x_t[i], std::sqrt(a) * x0[i] + std::sqrt(1 - a) * eps, 1e-5, 1e-6));
    CHECK(torch::allclose(b.x_t[i], (x0[i] + sig * eps) / std::sqrt(1 + sig * sig), 1e-5, 1e-6));
  }
}

TEST_CASE("v and rectified-flow targets follow their definitions") {
  torch::manual_seed(1);
  const torch::Tensor x0 = torch::randn({3, 4, 4, 4});
  const auto ids = iota(0, 3);
  const Objective v = make(Target::kV), flow = make(Target::kFlow);
  const NoisedBatch bv = v.make_batch(x0, ids, 0), bf = flow.make_batch(x0, ids, 0);
  for (int64_t i = 0; i < 3; ++i) {
    const torch::Tensor eps = v.draw_noise({4, 4, 4}, i, 0);
    const double a = v.schedule().abar(v.draw_timestep(i, 0));
    CHECK(torch::allclose(bv.target[i], std::sqrt(a) * eps - std::sqrt(1 - a) * x0[i], 1e-5, 1e-6));
    const double t = flow.draw_flow_time(i, 0);
    CHECK(torch::allclose(bf.x_t[i], (1 - t) * x0[i] + t * eps, 1e-5, 1e-6));
    CHECK(torch::allclose(bf.target[i], eps - x0[i], 1e-5, 1e-6));
    CHECK(bf.t_model[i].item<float>() == Approx(t * 1000).epsilon(1e-6));
    CHECK(bf.snr[i].item<float>() == Approx(std::pow((1 - t) / t, 2)).epsilon(1e-5));
  }
}

TEST_CASE("draws depend on (seed, step, sample id) only: a batch split in two gives the same samples") {
  const Objective obj = make(Target::kEps);
  torch::manual_seed(2);
  const torch::Tensor x0 = torch::randn({6, 2, 4, 4});
  const NoisedBatch whole = obj.make_batch(x0, iota(40, 6), 3);
  const NoisedBatch a = obj.make_batch(x0.narrow(0, 0, 2), iota(40, 2), 3);
  const NoisedBatch b = obj.make_batch(x0.narrow(0, 2, 4), iota(42, 4), 3);
  CHECK(torch::equal(whole.x_t, torch::cat({a.x_t, b.x_t})));
  CHECK(torch::equal(whole.t_model, torch::cat({a.t_model, b.t_model})));
  CHECK_FALSE(torch::equal(whole.x_t, obj.make_batch(x0, iota(40, 6), 4).x_t));  // next step differs
  CHECK_FALSE(torch::equal(whole.x_t, make(Target::kEps, LossWeighting::kNone, 12).make_batch(x0, iota(40, 6), 3).x_t));
}

TEST_CASE("timestep sampling: uniform covers [0, T) evenly; logit-normal has the requested logit moments") {
  const Objective uni = make(Target::kEps);
  const int N = 40000;
  double sum = 0;
  int64_t lo = 1000, hi = -1;
  for (int i = 0; i < N; ++i) {
    const int64_t t = uni.draw_timestep(i, 0);
    sum += t;
    lo = std::min(lo, t);
    hi = std::max(hi, t);
  }
  // Uniform on {0..999}: mean 499.5, std 288.7 -> standard error 1.44; allow 5 of them.
  CHECK(sum / N == Approx(499.5).margin(5 * 288.7 / std::sqrt(N)));
  CHECK(lo == 0);
  CHECK(hi == 999);
  ObjectiveConfig c;
  c.target = Target::kFlow;
  c.sampling = TimestepSampling::kLogitNormal;
  c.logit_mean = 0.5;
  c.logit_std = 0.8;
  const Objective ln(c, NoiseSchedule::make({}));
  double m1 = 0, m2 = 0;
  for (int i = 0; i < N; ++i) {
    const double t = ln.draw_flow_time(i, 0), z = std::log(t / (1 - t));
    m1 += z;
    m2 += z * z;
  }
  m1 /= N;
  const double sd = std::sqrt(m2 / N - m1 * m1);
  CHECK(m1 == Approx(0.5).margin(5 * 0.8 / std::sqrt(N)));
  CHECK(sd == Approx(0.8).epsilon(0.02));  // std of a sample std ~ 0.8/sqrt(2N) = 0.35%
}

TEST_CASE("text and control dropout have their own probabilities and are independent") {
  ObjectiveConfig c;
  c.p_drop_text = 0.1;
  c.p_drop_control = 0.3;
  const Objective obj(c, NoiseSchedule::make({}));
  const int64_t N = 20000;
  const NoisedBatch b = obj.make_batch(torch::zeros({N, 1}), iota(0, N), 5);
  const double drop_text = 1.0 - b.keep_text.to(torch::kFloat64).mean().item<double>();
  const double drop_ctrl = 1.0 - b.keep_control.to(torch::kFloat64).mean().item<double>();
  const double both =
      (b.keep_text.logical_not() & b.keep_control.logical_not()).to(torch::kFloat64).mean().item<double>();
  auto se = [&](double p) { return std::sqrt(p * (1 - p) / N); };  // binomial standard error
  CHECK(drop_text == Approx(0.1).margin(5 * se(0.1)));
  CHECK(drop_ctrl == Approx(0.3).margin(5 * se(0.3)));
  CHECK(both == Approx(0.03).margin(5 * se(0.03)));  // independence: P(both) = 0.1 * 0.3
}

TEST_CASE("min-SNR-gamma weights equal min(SNR, gamma) times the x0-space error, for every target") {
  // Perturb the target by delta; the implied x0 error is (d x0 / d target) * delta. The weighted
  // loss must equal min(SNR, gamma) * |x0 error|^2 averaged, whatever the parametrisation.
  torch::manual_seed(3);
  const torch::Tensor x0 = torch::randn({8, 1, 4, 4});
  const auto ids = iota(0, 8);
  for (Target target : {Target::kEps, Target::kV, Target::kFlow}) {
    const Objective obj = make(target, LossWeighting::kMinSnr);
    const NoisedBatch b = obj.make_batch(x0, ids, 0);
    const torch::Tensor delta = 0.1 * torch::randn_like(x0);
    const torch::Tensor loss = obj.loss(b.target + delta, b);
    double expected = 0;
    for (int64_t i = 0; i < 8; ++i) {
      const double snr = b.snr[i].item<double>();
      double dx0;  // d x0 / d target
      if (target == Target::kFlow)
        dx0 = obj.draw_flow_time(i, 0);  // x0 = x_t - t u
      else if (target == Target::kEps)
        dx0 = 1.0 / std::sqrt(snr);  // x0 = (x_t - sqrt(1-a) eps)/sqrt(a)
      else
        dx0 = std::sqrt(1.0 / (snr + 1.0));  // x0 = sqrt(a) x_t - sqrt(1-a) v
      expected += std::min(snr, 5.0) * (dx0 * delta[i]).pow(2).mean().item<double>();
    }
    INFO(static_cast<int>(target));
    CHECK(loss.item<double>() == Approx(expected / 8).epsilon(1e-4));
  }
}

TEST_CASE("sigma^-2 weighting weights each sample by its SNR; no weighting gives the plain MSE") {
  torch::manual_seed(4);
  const torch::Tensor x0 = torch::randn({5, 2, 2, 2});
  const Objective plain = make(Target::kEps), inv = make(Target::kEps, LossWeighting::kSigmaInvSq);
  const NoisedBatch b = plain.make_batch(x0, iota(0, 5), 0), bi = inv.make_batch(x0, iota(0, 5), 0);
  CHECK(plain.loss(b.target, b).item<double>() == 0.0);
  CHECK(plain.loss(b.target + 1, b).item<double>() == Approx(1.0));
  CHECK(inv.loss(bi.target + 1, bi).item<double>() == Approx(bi.snr.mean().item<double>()).epsilon(1e-6));
}

TEST_CASE("truncated-SNR weighting: max(SNR, 1) on the x0 error, for eps and v targets") {
  torch::manual_seed(5);
  const torch::Tensor x0 = torch::randn({6, 2, 2, 2});
  for (Target target : {Target::kEps, Target::kV}) {
    const Objective obj = make(target, LossWeighting::kTruncatedSnr);
    const NoisedBatch b = obj.make_batch(x0, iota(0, 6), 0);
    // A unit error in the target: the x0-space weight max(SNR, 1) times (d x0 / d target)^2,
    // 1/SNR for eps and 1/(SNR + 1) for v (x0 = sqrt(abar) x_t - sqrt(1 - abar) v).
    double expected = 0;
    for (int64_t i = 0; i < 6; ++i) {
      const double snr = b.snr[i].item<double>();
      expected += std::max(snr, 1.0) / (target == Target::kEps ? snr : snr + 1.0) / 6.0;
    }
    INFO((target == Target::kEps ? "eps" : "v"));
    CHECK(obj.loss(b.target + 1, b).item<double>() == Approx(expected).epsilon(1e-6));
  }
  CHECK(parse_loss_weighting("w", "truncated_snr") == LossWeighting::kTruncatedSnr);
}

TEST_CASE("invalid objective configurations are rejected") {
  ObjectiveConfig c;
  c.p_drop_text = 1.5;
  CHECK_THROWS_WITH(Objective(c, NoiseSchedule::make({})), Catch::Contains("objective.p_drop_text"));
  ScheduleConfig zt;
  zt.zero_terminal_snr = true;
  CHECK_THROWS_WITH(Objective(ObjectiveConfig{}, NoiseSchedule::make(zt)), Catch::Contains("needs target v"));
  ObjectiveConfig v;
  v.target = Target::kV;
  CHECK_NOTHROW(Objective(v, NoiseSchedule::make(zt)));
  CHECK_THROWS_WITH(make(Target::kEps).make_batch(torch::zeros({2, 1}), {1}, 0), Catch::Contains("sample_ids"));
}
