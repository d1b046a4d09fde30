// Samplers end to end on Gaussian data x0 ~ N(mu, diag(s^2)), where the optimal predictors are
// known in closed form, and the guidance combinations of [S2] Eq. 2.
#include <catch2/catch.hpp>

#include <cmath>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/diffusion/guidance.h"
#include "dtrainer/diffusion/sampler.h"

using namespace dtrainer;
using namespace dtrainer::diffusion;

namespace {
const std::vector<double> kMu = {2.0, -1.0, 0.5, 0.0};
const std::vector<double> kStd = {0.5, 1.0, 2.0, 0.1};
constexpr int64_t kN = 20000;

torch::Tensor row(const std::vector<double>& v) { return torch::tensor(v, torch::kFloat64).unsqueeze(0); }

// Posterior means for x_t = sqrt(a) x0 + sqrt(1-a) eps with x0 ~ N(mu, s^2):
//   E[eps | x] = sqrt(1-a) (x - sqrt(a) mu) / V,   E[x0 | x] = mu + sqrt(a) s^2 (x - sqrt(a) mu) / V,
//   V = a s^2 + 1 - a.
torch::Tensor optimal_eps(const torch::Tensor& x, double a) {
  const torch::Tensor mu = row(kMu), s2 = row(kStd).pow(2);
  return std::sqrt(1 - a) * (x - std::sqrt(a) * mu) / (a * s2 + 1 - a);
}
torch::Tensor optimal_x0(const torch::Tensor& x, double a) {
  const torch::Tensor mu = row(kMu), s2 = row(kStd).pow(2);
  return mu + std::sqrt(a) * s2 * (x - std::sqrt(a) * mu) / (a * s2 + 1 - a);
}

struct Moments {
  torch::Tensor mean, std;
};
Moments moments(const torch::Tensor& x) { return {x.mean(0), x.std(0, /*unbiased=*/false)}; }
}  // namespace

TEST_CASE("ddim_timesteps: 50 evenly spaced steps from T-1 to 0") {
  const auto ts = ddim_timesteps(1000, 50);
  REQUIRE(ts.size() == 50);
  CHECK(ts.front() == 999);
  CHECK(ts.back() == 0);
  for (size_t i = 1; i < ts.size(); ++i) CHECK(ts[i] < ts[i - 1]);
  CHECK_THROWS_WITH(ddim_timesteps(1000, 0), Catch::Contains("sampler.steps"));
}

namespace {
// Closed form of a DDIM run on this data. Each step maps the deviation from the mean path linearly,
//   d' = k d,  k = (sqrt(a a') s^2 + sqrt((1-a)(1-a'))) / V(a)   (a' = 1 on the last step),
// and keeps the mean exactly; starting from the exact marginal, final = mu + sqrt(V_T) prod(k) z.
// By Cauchy-Schwarz k <= sqrt(V(a') / V(a)) with equality only for a = a': deterministic DDIM
// under-disperses, by a discretisation error that vanishes as the steps get finer.
double ddim_gain(const NoiseSchedule& sched, const std::vector<int64_t>& ts, double s) {
  const double aT = sched.abar(ts[0]);
  double k = std::sqrt(aT * s * s + 1 - aT);
  for (size_t i = 0; i < ts.size(); ++i) {
    const double a = sched.abar(ts[i]), ap = i + 1 < ts.size() ? sched.abar(ts[i + 1]) : 1.0;
    k *= (std::sqrt(a * ap) * s * s + std::sqrt((1 - a) * (1 - ap))) / (a * s * s + 1 - a);
  }
  return k;
}
}  // namespace

TEST_CASE("DDIM with the optimal eps-predictor reproduces N(mu, s^2) (and the v-predictor agrees)") {
  const NoiseSchedule sched = NoiseSchedule::make({});
  auto a_of = [&](const torch::Tensor& t) { return sched.abar(static_cast<int64_t>(t[0].item<float>())); };
  const Denoiser eps_model = [&](const torch::Tensor& x, const torch::Tensor& t) { return optimal_eps(x, a_of(t)); };
  const Denoiser v_model = [&](const torch::Tensor& x, const torch::Tensor& t) {
    const double a = a_of(t);
    return std::sqrt(a) * optimal_eps(x, a) - std::sqrt(1 - a) * optimal_x0(x, a);
  };
  const torch::Tensor z = initial_noise({kN, 4}, 123).to(torch::kFloat64);
  const Moments zm = moments(z);
  for (int64_t steps : {50, 1000}) {
    const auto ts = ddim_timesteps(1000, steps);
    const double aT = sched.abar(ts[0]);
    // Start from the exact marginal at t = 999: sqrt(a) mu + sqrt(V) z.
    const torch::Tensor x_start = std::sqrt(aT) * row(kMu) + (aT * row(kStd).pow(2) + 1 - aT).sqrt() * z;
    DdimConfig cfg;
    cfg.steps = steps;
    const torch::Tensor x_eps = ddim_sample(sched, eps_model, x_start, cfg);
    cfg.prediction = Target::kV;
    CHECK(torch::allclose(x_eps, ddim_sample(sched, v_model, x_start, cfg), 1e-9, 1e-9));
    const Moments got = moments(x_eps);
    for (int64_t d = 0; d < 4; ++d) {
      const double s = kStd[d], mu = kMu[d], k = ddim_gain(sched, ts, s);
      INFO(steps << " steps, dim " << d << ": closed-form std " << k << " vs s = " << s);
      // 1. The implementation is the closed form (float64 arithmetic).
      CHECK(got.mean[d].item<double>() == Approx(mu + k * zm.mean[d].item<double>()).margin(1e-9));
      CHECK(got.std[d].item<double>() == Approx(k * zm.std[d].item<double>()).epsilon(1e-9));
      CHECK(k <= s * (1 + 1e-12));
      // 2. The mean is exact: only Monte Carlo error (5 standard errors, s / sqrt(N)).
      CHECK(got.mean[d].item<double>() == Approx(mu).margin(5 * s / std::sqrt(kN)));
      // 3. The std: discretisation bias (first order in the step size: at most 6% of s at 50 steps
      //    and 0.5% at 1000 for data scales s >= 0.5; s = 0.1 sits near the schedule's smallest
      //    noise levels and needs 1000 steps for 6%) plus Monte Carlo error (5 x s / sqrt(2N)).
      if (s >= 0.5 || steps == 1000) {
        const double bias = s >= 0.5 ? (steps == 50 ? 0.06 : 0.005) : 0.06;
        CHECK(got.std[d].item<double>() == Approx(s).epsilon(bias + 5 / std::sqrt(2.0 * kN)));
      }
    }
  }
  // The bias is discretisation error: it shrinks with every refinement, and for s >= 0.5 it is
  // already first order at 50 steps (doubling the steps halves it: ratio 0.5 +- 0.1).
  for (double s : kStd) {
    auto err = [&](int64_t n) { return s - ddim_gain(sched, ddim_timesteps(1000, n), s); };
    INFO("s = " << s);
    CHECK(err(1000) < err(250));
    CHECK(err(250) < err(100));
    CHECK(err(100) < err(50));
    if (s >= 0.5) CHECK(err(100) / err(50) == Approx(0.5).margin(0.1));
  }
}

TEST_CASE("Euler on the optimal rectified-flow velocity reproduces N(mu, s^2)") {
  // x_t = (1-t) x0 + t eps; u = eps - x0; with V = (1-t)^2 s^2 + t^2:
  //   E[u | x] = -mu + (t - (1-t) s^2) (x - (1-t) mu) / V
  const Denoiser flow_model = [](const torch::Tensor& x, const torch::Tensor& tm) {
    const double t = tm[0].item<float>() / 1000.0;
    const torch::Tensor mu = row(kMu), s2 = row(kStd).pow(2);
    const torch::Tensor V = (1 - t) * (1 - t) * s2 + t * t;
    return -mu + (t - (1 - t) * s2) * (x - (1 - t) * mu) / V;
  };
  const torch::Tensor z = initial_noise({kN, 4}, 321).to(torch::kFloat64);  // x_1 = eps exactly
  EulerConfig cfg;
  const torch::Tensor x0 = euler_flow_sample(flow_model, z, cfg);
  const Moments got = moments(x0), zm = moments(z);
  for (int64_t d = 0; d < 4; ++d) {
    const double s = kStd[d], mu = kMu[d];
    // Euler is affine on this model: propagate the mean path m and the deviation gain g.
    double m = 0, g = 1;
    for (int64_t i = 0; i < cfg.steps; ++i) {
      // t as the sampler computes it, through the model's float32 timestep input
      const double t = static_cast<float>((1.0 - double(i) / cfg.steps) * 1000.0) / 1000.0, dt = -1.0 / cfg.steps;
      const double V = (1 - t) * (1 - t) * s * s + t * t, slope = (t - (1 - t) * s * s) / V;
      m += dt * (-mu + slope * (m - (1 - t) * mu));
      g *= 1 + dt * slope;
    }
    INFO("dim " << d << ": closed-form mean " << m << " std " << g);
    CHECK(got.mean[d].item<double>() == Approx(m + g * zm.mean[d].item<double>()).margin(1e-9));
    CHECK(got.std[d].item<double>() == Approx(std::abs(g) * zm.std[d].item<double>()).epsilon(1e-9));
    // First-order Euler at 50 steps: for data scales s >= 0.5 the closed form is within 3% of s in
    // mean and std (s = 0.1: within 10%, the velocity field bends sharply near t = 0); the samples
    // then match within that plus Monte Carlo error (5 standard errors).
    const double tol = s >= 0.5 ? 0.03 : 0.10;
    CHECK(std::abs(m - mu) < tol * s);
    CHECK(std::abs(g) == Approx(s).epsilon(tol));
    CHECK(got.mean[d].item<double>() == Approx(mu).margin(tol * s + 5 * s / std::sqrt(kN)));
    CHECK(got.std[d].item<double>() == Approx(s).epsilon(tol + 5 / std::sqrt(2.0 * kN)));
  }
}

TEST_CASE("DDIM with eta > 0 is deterministic for a seed and differs across seeds") {
  const NoiseSchedule sched = NoiseSchedule::make({});
  const Denoiser model = [&](const torch::Tensor& x, const torch::Tensor& t) {
    return optimal_eps(x, sched.abar(static_cast<int64_t>(t[0].item<float>())));
  };
  const torch::Tensor x = initial_noise({64, 4}, 5).to(torch::kFloat64);
  DdimConfig c;
  c.eta = 1.0;
  c.steps = 20;
  c.seed = 1;
  const torch::Tensor a = ddim_sample(sched, model, x, c), b = ddim_sample(sched, model, x, c);
  c.seed = 2;
  CHECK(torch::equal(a, b));
  CHECK_FALSE(torch::allclose(a, ddim_sample(sched, model, x, c)));
  CHECK(torch::equal(initial_noise({3, 2}, 9, 4), initial_noise({3, 2}, 9, 4)));
  CHECK_FALSE(torch::equal(initial_noise({3, 2}, 9, 4), initial_noise({3, 2}, 9, 5)));
}

TEST_CASE("Eq. 2: beta = 1 is plain CFG, lam = 1 is the control-guided conditional prediction") {
  torch::manual_seed(8);
  const torch::Tensor cs = torch::randn({2, 3}), ns = torch::randn({2, 3}), nn = torch::randn({2, 3});
  CHECK(torch::allclose(control_guidance(cs, ns, nn, 7.5, 1.0), classifier_free_guidance(cs, nn, 7.5)));
  CHECK(torch::allclose(control_guidance(cs, ns, nn, 7.5, 1.0), 7.5 * cs - 6.5 * nn));
  CHECK(torch::allclose(control_guidance(cs, ns, nn, 1.0, 1.375), 1.375 * cs - 0.375 * ns));
  CHECK(torch::allclose(control_guidance(cs, ns, nn, 1.0, 1.0), cs));
  CHECK(torch::allclose(classifier_free_guidance(cs, nn, 0.0), nn));
}

TEST_CASE("guided_denoiser evaluates exactly the terms Eq. 2 needs") {
  int calls[2][2] = {{0, 0}, {0, 0}};
  const ConditionalModel model = [&](const torch::Tensor& x, const torch::Tensor&, bool text, bool control) {
    ++calls[text][control];
    return torch::full_like(x, 100.0 * text + 10.0 * control + 1.0);  // distinct value per condition
  };
  const torch::Tensor x = torch::zeros({1, 1}), t = torch::zeros({1});
  const double out = guided_denoiser(model, {7.5, 1.375})(x, t).item<double>();
  CHECK(out == Approx(7.5 * (1.375 * 111 + (1 - 1.375) * 11) + (1 - 7.5) * 1));
  CHECK(calls[1][1] == 1);
  CHECK(calls[0][1] == 1);
  CHECK(calls[0][0] == 1);
  CHECK(calls[1][0] == 0);
  CHECK(guided_denoiser(model, {7.5, 1.0})(x, t).item<double>() == Approx(7.5 * 111 - 6.5 * 1));
  CHECK(calls[0][1] == 1);  // beta = 1 needs no (null, s) term
  CHECK(guided_denoiser(model, {1.0, 1.0})(x, t).item<double>() == Approx(111));
}
