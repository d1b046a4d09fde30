// The power-function EMA (parallel/power_ema.h) against closed forms and an independent numpy
// reimplementation of EDM2's post-hoc solve (tests/ckpt/phema_reference.py):
//  - sigma_rel <-> gamma round-trips, and matches the exponents EDM2 quotes (16.97 for 0.05,
//    6.94 for 0.10); values outside (0, 1/sqrt 12) are refused by name;
//  - the tracked average of an impulse at step k equals the profile's mass over that step, with a
//    varying batch (time is images), through the EMA pass and through AdamW's averages (what the
//    optimizer runs);
//  - the inner product matches quadrature of the profiles' product;
//  - the solve reproduces a tracked profile at a snapshot time exactly (one-hot weights), and
//    numpy's solve over a synthetic trajectory's snapshots to 1e-6.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data/data_test_util.h"
#include "dtrainer/core/error.h"
#include "dtrainer/parallel/adamw.h"
#include "dtrainer/parallel/power_ema.h"
#include "run_process.h"

using namespace dtrainer;
using namespace dtrainer::parallel;

TEST_CASE("sigma_rel and gamma convert both ways (EDM2 eq. 123), and the range is enforced") {
  CHECK(phema_gamma(0.05) == Approx(16.97).margin(0.005));  // EDM2, Sec. 3.1: gamma = 16.97 and 6.94
  CHECK(phema_gamma(0.10) == Approx(6.94).margin(0.005));
  for (const double s : {1e-3, 0.01, 0.05, 0.0725, 0.1, 0.2, 0.25, 0.288})
    CHECK(phema_sigma_rel(phema_gamma(s)) == Approx(s).epsilon(1e-12));
  for (const double g : {0.01, 0.5, 3.0, 16.97, 500.0})
    CHECK(phema_gamma(phema_sigma_rel(g)) == Approx(g).epsilon(1e-9));
  CHECK(phema_sigma_rel(0.0) == Approx(kPhemaMaxSigmaRel).epsilon(1e-15));
  for (const double bad : {0.0, -0.05, 0.2887, 0.3, 1.0, std::nan("")})
    CHECK_THROWS_WITH(phema_gamma(bad, "phema_sigma_rel"),
                      Catch::StartsWith("phema_sigma_rel: ") && Catch::Contains("0 < sigma_rel < 0.2887"));
  CHECK(phema_name(0.05) == "phema_0.05");
  CHECK(phema_name(0.1) == "phema_0.1");
}

TEST_CASE("an impulse's tracked weight is the profile's mass over its step, in images (EDM2 eq. 121, 127)") {
  const std::vector<int64_t> batches = {4, 4, 8, 4, 12, 4, 16, 8, 8, 4, 20, 4};  // a varying global batch
  const int64_t k0 = 3;                                                          // the impulse's step (from 1)
  for (const double sigma : {0.05, 0.1, 0.2}) {
    const double gamma = phema_gamma(sigma);
    for (const bool in_adamw : {false, true}) {
      // Element 0 holds the impulse (1 at step k0, else 0); the average starts at anything (beta = 0 at step 1).
      torch::Tensor avg = torch::full({4}, 7.0f), param = torch::zeros({4});
      torch::Tensor grad = torch::zeros({4}), m = torch::zeros({4}), v = torch::zeros({4});
      AdamWConfig still;  // lr 0: AdamW leaves param as set, so its averages see exactly it
      still.lr = 0;
      double images = 0, before_k0 = 0, at_k0 = 0;
      for (size_t n = 1; n <= batches.size(); ++n) {
        const double b = static_cast<double>(batches[n - 1]);
        images += b;
        if (static_cast<int64_t>(n) == k0) before_k0 = images - b, at_k0 = images;
        param.fill_(static_cast<int64_t>(n) == k0 ? 1.0f : 0.0f);
        const double beta = phema_beta(gamma, images, b);
        if (in_adamw)
          adamw_step(param, grad, m, v, static_cast<int64_t>(n), still, 1.0, {}, {{avg, beta}});
        else
          ema_update(avg, param, beta);
        if (static_cast<int64_t>(n) < k0) continue;
        // The profile's mass over [t(k0-1), t(k0)] at time t: (t_k0^(g+1) - t_{k0-1}^(g+1)) / t^(g+1).
        const double want = (std::pow(at_k0 / images, gamma + 1) - std::pow(before_k0 / images, gamma + 1));
        INFO("sigma_rel " << sigma << (in_adamw ? " in adamw_step" : " ema_update") << ", step " << n);
        CHECK(avg[0].item<double>() == Approx(want).epsilon(2e-5).margin(1e-7));
      }
    }
  }
  CHECK_THROWS_WITH(phema_beta(1.0, 4, 8), Catch::Contains("batch <= images"));
}

TEST_CASE("the profiles' inner product is the integral of their product (EDM2 eq. 151)") {
  // Quadrature of p_a p_b on [0, min(t_a, t_b)] against the closed form, for unequal times and widths.
  const auto p = [](double tau, double t, double g) { return (g + 1) * std::pow(tau / t, g) / t; };
  for (const auto& [ta, ga, tb, gb] : std::vector<std::tuple<double, double, double, double>>{
           {100, 6.94, 100, 16.97}, {40, 16.97, 100, 6.94}, {100, 1.5, 30, 3.0}, {7, 0.2, 9, 0.7}}) {
    const double m = std::min(ta, tb);
    const int n = 200000;
    double sum = 0;
    for (int i = 0; i < n; ++i) {
      const double tau = (i + 0.5) * m / n;
      sum += p(tau, ta, ga) * p(tau, tb, gb) * m / n;
    }
    CHECK(phema_inner_product(ta, ga, tb, gb) == Approx(sum).epsilon(1e-6));
    CHECK(phema_inner_product(ta, ga, tb, gb) == phema_inner_product(tb, gb, ta, ga));
  }
  CHECK(std::isfinite(phema_inner_product(1e9, 2000, 1e3, 2000)));  // (no overflow for narrow profiles)
}

TEST_CASE("a tracked profile at a snapshot time reconstructs as itself") {
  const double g5 = phema_gamma(0.05), g10 = phema_gamma(0.10);
  std::vector<PhemaProfile> snaps;
  for (const double t : {100.0, 200.0, 300.0, 400.0}) snaps.push_back({t, g5}), snaps.push_back({t, g10});
  const PhemaSolution s = phema_solve(snaps, {300.0, g10});
  for (size_t i = 0; i < snaps.size(); ++i) CHECK(s.weights[i] == Approx(i == 5 ? 1.0 : 0.0).margin(1e-9));
  CHECK(s.relative_error < 1e-12);
  const PhemaSolution between = phema_solve(snaps, {400.0, phema_gamma(0.07)});
  double total = 0;
  for (const double w : between.weights) total += w;
  CHECK(total == Approx(1.0).epsilon(1e-12));
  CHECK(between.relative_error > 0);
  CHECK(between.relative_error < 1e-2);  // (four snapshot times: a coarse cover)
  CHECK_THROWS_WITH(phema_solve({}, {1.0, g5}), Catch::Contains("no snapshots"));
  CHECK_THROWS_WITH(phema_solve({{100.0, g5}, {100.0, g5}}, {100.0, g5}), Catch::Contains("snapshot repeated"));
}

TEST_CASE("reconstructions of a synthetic trajectory agree with an independent numpy solve to 1e-6") {
  // The trajectory phema_reference.py recomputes: theta_n[j] = sin(0.37 (j+1) n / N) + 0.1 j - 0.02 n.
  const std::vector<int64_t> batches = {8, 8, 8, 16, 8, 8, 24, 8, 8, 8, 16, 8, 8, 8, 8, 32, 8, 8, 8, 8, 16, 8, 8, 8};
  const int64_t dim = 6, N = static_cast<int64_t>(batches.size());
  const std::vector<double> tracked = {0.05, 0.10};
  std::vector<torch::Tensor> avgs(tracked.size());
  for (auto& a : avgs) a = torch::zeros({dim});
  nlohmann::json snaps = nlohmann::json::array();
  std::vector<PhemaProfile> profiles;
  std::vector<torch::Tensor> values;
  double images = 0;
  for (int64_t n = 1; n <= N; ++n) {
    const double b = static_cast<double>(batches[n - 1]);
    images += b;
    torch::Tensor theta = torch::empty({dim});
    for (int64_t j = 0; j < dim; ++j)
      theta[j] = std::sin(0.37 * (j + 1) * static_cast<double>(n) / N) + 0.1 * j - 0.02 * n;
    for (size_t k = 0; k < tracked.size(); ++k)
      ema_update(avgs[k], theta, phema_beta(phema_gamma(tracked[k]), images, b));
    if (n % 3 != 0) continue;  // a snapshot every third step
    for (size_t k = 0; k < tracked.size(); ++k) {
      std::vector<double> v(avgs[k].data_ptr<float>(), avgs[k].data_ptr<float>() + dim);
      snaps.push_back({{"step", n}, {"images", images}, {"sigma_rel", tracked[k]}, {"values", v}});
      profiles.push_back({images, phema_gamma(tracked[k])});
      values.push_back(avgs[k].to(torch::kFloat64));
    }
  }
  nlohmann::json recs = nlohmann::json::array();
  for (const double sigma : {0.03, 0.05, 0.07, 0.10, 0.15, 0.2}) {
    const PhemaSolution s = phema_solve(profiles, {images, phema_gamma(sigma)});
    torch::Tensor r = torch::zeros({dim}, torch::kFloat64);
    for (size_t i = 0; i < values.size(); ++i) r += s.weights[i] * values[i];
    recs.push_back({{"sigma_rel", sigma},
                    {"weights", s.weights},
                    {"values", std::vector<double>(r.data_ptr<double>(), r.data_ptr<double>() + dim)}});
  }
  std::vector<double> gammas;
  for (const double s : tracked) gammas.push_back(phema_gamma(s));
  const nlohmann::json spec = {
      {"batches", batches}, {"dim", dim},          {"tracked", tracked},      {"gammas", gammas},
      {"snapshots", snaps}, {"at_images", images}, {"reconstructions", recs}, {"exact_tolerance", 0.02}};
  const std::string path = test::scratch_dir("phema-synthetic") + "/spec.json";
  std::ofstream(path) << spec.dump();
  const auto r = test::run_process(std::string(DT_NUMPY_PYTHON) + " " + PHEMA_REFERENCE + " synthetic " + path);
  INFO(r.out);
  CHECK(r.status == 0);
}
