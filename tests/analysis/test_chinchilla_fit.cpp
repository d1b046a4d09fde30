// The Chinchilla fit against Besiroglu et al. (2024)'s replication on the same data, and on
// synthetic data drawn from known laws.
#include <catch2/catch.hpp>

#include "kokkos_session.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "dtrainer/analysis/chinchilla_fit.h"
#include "dtrainer/analysis/table.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"

using namespace dtrainer;
using namespace dtrainer::analysis;

namespace {
const bool kokkos_ready = (test::ensure_kokkos_session(), true);

// The 245 extracted Chinchilla runs, D = FLOP / (6 N), the 5 highest-loss runs dropped -> 240.
ChinchillaData chinchilla_points() {
  const Table t = read_csv(DT_CHINCHILLA_CSV);
  ChinchillaData all;
  all.N = t.numeric("Model Size");
  all.loss = t.numeric("loss");
  const auto flops = t.numeric("Training FLOP");
  for (size_t i = 0; i < flops.size(); ++i) all.D.push_back(flops[i] / (6 * all.N[i]));
  std::vector<size_t> order(all.N.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return all.loss[a] < all.loss[b]; });
  order.resize(order.size() - 5);
  ChinchillaData d;
  for (size_t i : order) d.N.push_back(all.N[i]), d.D.push_back(all.D[i]), d.loss.push_back(all.loss[i]);
  return d;
}
}  // namespace

TEST_CASE("the objective at Hoffmann et al.'s rounded estimates is 4.121e-3 on the 240 points") {
  const ChinchillaData d = chinchilla_points();
  REQUIRE(d.N.size() == 240);
  const ChinchillaParams hoffmann{1.69, 406.4, 410.7, 0.34, 0.28};
  CHECK(chinchilla_objective(hoffmann, d) == Approx(4.121e-3).epsilon(5e-4));
}

TEST_CASE("the grid fit reproduces Besiroglu et al.'s estimates, with bootstrap errors of their size") {
  const ChinchillaData d = chinchilla_points();
  const ChinchillaFit fit = fit_chinchilla(d);
  CHECK(fit.starts == 4500);
  CHECK(fit.objective <= 1.0183e-3);
  // Their published estimates: E 1.82, A 482, B 2085, alpha 0.348, beta 0.366 (our optimum of
  // their objective: E 1.817, A 478, B 2144, alpha 0.347, beta 0.367).
  CHECK(fit.params.alpha == Approx(0.347).margin(0.002));
  CHECK(fit.params.beta == Approx(0.367).margin(0.002));
  CHECK(fit.params.E == Approx(1.817).margin(0.005));
  CHECK(fit.params.A == Approx(478).epsilon(0.02));
  CHECK(fit.params.B == Approx(2144).epsilon(0.03));
  // Their bootstrap standard errors: alpha 0.015, beta 0.021, E 0.026. Same order: within 2x.
  const ChinchillaBootstrap b = bootstrap_chinchilla(d, fit, 100, 7);
  CHECK(b.alpha.se > 0.015 / 2);
  CHECK(b.alpha.se < 0.015 * 2);
  CHECK(b.beta.se > 0.021 / 2);
  CHECK(b.beta.se < 0.021 * 2);
  CHECK(b.E.se > 0.026 / 2);
  CHECK(b.E.se < 0.026 * 2);
  CHECK(b.alpha.lo < fit.params.alpha);
  CHECK(b.alpha.hi > fit.params.alpha);
}

TEST_CASE("synthetic data from a known law: the fit recovers it within its reported intervals") {
  const ChinchillaParams truth{1.7, 400.0, 1500.0, 0.33, 0.30};
  ChinchillaData d;
  StreamRng rng(42);
  for (double lnN = std::log(7e7); lnN < std::log(1.6e10); lnN += 0.45)
    for (double lnD = std::log(5e9); lnD < std::log(5e11); lnD += 0.6) {
      const double N = std::exp(lnN), D = std::exp(lnD);
      d.N.push_back(N);
      d.D.push_back(D);
      d.loss.push_back(truth.predict(N, D) * std::exp(0.01 * rng.normal()));  // 1% log-normal noise
    }
  REQUIRE(d.N.size() > 80);
  ChinchillaFitOptions coarse;  // a smaller grid keeps the test fast; the optimum is found from it
  coarse.a_grid = {0, 10, 20};
  coarse.b_grid = {0, 10, 20};
  coarse.e_grid = {-1, 0, 1};
  const ChinchillaFit fit = fit_chinchilla(d, coarse);
  const ChinchillaBootstrap b = bootstrap_chinchilla(d, fit, 100, 3);
  INFO("alpha " << fit.params.alpha << " [" << b.alpha.lo << ", " << b.alpha.hi << "], beta " << fit.params.beta << " ["
                << b.beta.lo << ", " << b.beta.hi << "], E " << fit.params.E << " [" << b.E.lo << ", " << b.E.hi
                << "]");
  CHECK(b.alpha.lo <= truth.alpha);
  CHECK(truth.alpha <= b.alpha.hi);
  CHECK(b.beta.lo <= truth.beta);
  CHECK(truth.beta <= b.beta.hi);
  CHECK(b.E.lo <= truth.E);
  CHECK(truth.E <= b.E.hi);
  CHECK(b.A.lo <= truth.A);
  CHECK(truth.A <= b.A.hi);
  CHECK(b.B.lo <= truth.B);
  CHECK(truth.B <= b.B.hi);
}

TEST_CASE("compute-optimal allocation spends C = 6 N D and minimises the loss along it") {
  const ChinchillaParams p{1.82, 482, 2085, 0.348, 0.366};
  for (double C : {1e20, 1e23}) {
    const ComputeOptimal o = compute_optimal(p, C);
    CHECK(6 * o.N * o.D == Approx(C).epsilon(1e-12));
    CHECK(o.loss == Approx(p.predict(o.N, o.D)));
    for (double f : {0.9, 1.1}) CHECK(p.predict(o.N * f, C / (6 * o.N * f)) > o.loss);  // neighbours are worse
  }
}

TEST_CASE("bad data is rejected with the row named") {
  ChinchillaData d{{1e8, 2e8, 3e8, 4e8, 5e8}, {1e9, 1e9, 1e9, 1e9, 1e9}, {3, 2.9, -1, 2.7, 2.6}};
  CHECK_THROWS_WITH(fit_chinchilla(d), Catch::Contains("row 3, loss") && Catch::Contains("positive"));
  d.loss[2] = std::nan("");
  CHECK_THROWS_WITH(fit_chinchilla(d), Catch::Contains("row 3, loss"));
  ChinchillaData few{{1, 2}, {1, 2}, {1, 2}};
  CHECK_THROWS_WITH(fit_chinchilla(few), Catch::Contains("at least 5 points"));
}

TEST_CASE("data that cannot identify the law is refused, saying why") {
  // Six identical rows (the fault campaign's case: it used to 'fit' exponents of -0.02).
  ChinchillaData same{std::vector<double>(6, 1e8), std::vector<double>(6, 2e9), std::vector<double>(6, 3.0)};
  CHECK_THROWS_WITH(fit_chinchilla(same), Catch::Contains("1 distinct N and 1 distinct D"));
  // Two model sizes only.
  ChinchillaData two{{1e8, 1e8, 1e8, 4e8, 4e8, 4e8}, {1e9, 3e9, 9e9, 1e9, 3e9, 9e9}, {3.2, 3.0, 2.9, 3.0, 2.8, 2.7}};
  CHECK_THROWS_WITH(fit_chinchilla(two), Catch::Contains("2 distinct N"));
  // D = 20 N in every row (a fixed tokens-per-parameter sweep): N's and D's terms are confounded.
  ChinchillaData ratio;
  for (double N : {1e8, 2e8, 4e8, 8e8, 1.6e9, 3.2e9})
    ratio.N.push_back(N), ratio.D.push_back(20 * N), ratio.loss.push_back(2 + 300 / std::pow(N, 0.3));
  CHECK_THROWS_WITH(fit_chinchilla(ratio), Catch::Contains("D is a fixed power of N"));
}

TEST_CASE(
    "unphysical fits are flagged: exponents at or below zero, intervals reaching zero, a loss rising with compute") {
  // Besiroglu et al.'s estimates: a sound law, nothing to flag.
  CHECK(chinchilla_warnings({1.82, 482, 2085, 0.348, 0.366}, nullptr).empty());
  const auto w = chinchilla_warnings({3.1, 0.5, 2.0, -0.02, 0.3}, nullptr);
  REQUIRE_FALSE(w.empty());
  CHECK_THAT(w[0], Catch::Contains("alpha = -0.02: the loss does not fall with N"));
  bool rising = false;
  for (const auto& s : w) rising |= s.find("compute-optimal loss does not fall") != std::string::npos;
  CHECK(rising);
  ChinchillaBootstrap b;
  b.alpha = {0.3, 0.2, -0.05, 0.6};
  b.beta = {0.3, 0.05, 0.2, 0.4};
  const auto wb = chinchilla_warnings({1.82, 482, 2085, 0.3, 0.3}, &b);
  REQUIRE(wb.size() == 1);
  CHECK_THAT(wb[0], Catch::Contains("alpha's 95% interval [-0.05, 0.6] reaches 0"));
}
