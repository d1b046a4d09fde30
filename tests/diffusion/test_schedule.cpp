// Schedules, [S2] Eq. 3 / Eq. 4 and gamma_c against closed forms and an independent numpy reference.
#include <catch2/catch.hpp>

#include <cmath>

#include "dtrainer/core/error.h"
#include "dtrainer/diffusion/schedule.h"
#include "numpy_reference.h"

using namespace dtrainer;
using namespace dtrainer::diffusion;

namespace {
void check_against(const NoiseSchedule& s, const nlohmann::json& ref, const nlohmann::json& probe) {
  for (size_t i = 0; i < probe.size(); ++i) {
    INFO("t = " << probe[i]);
    CHECK(s.abar(probe[i].get<int64_t>()) == Approx(ref[i].get<double>()).epsilon(1e-12).margin(1e-15));
  }
}
}  // namespace

TEST_CASE("schedules match the numpy reference") {
  const auto ref = test::numpy_reference();
  check_against(NoiseSchedule::make({}), ref["scaled_linear"], ref["probe"]);
  ScheduleConfig lin;
  lin.kind = BetaSchedule::kLinear;
  lin.beta_start = 0.0001;
  lin.beta_end = 0.02;
  check_against(NoiseSchedule::make(lin), ref["linear"], ref["probe"]);
  ScheduleConfig cos;
  cos.kind = BetaSchedule::kCosine;
  check_against(NoiseSchedule::make(cos), ref["cosine"], ref["probe"]);
  ScheduleConfig zt;
  zt.zero_terminal_snr = true;
  check_against(NoiseSchedule::make(zt), ref["zero_terminal"], ref["probe"]);
  ScheduleConfig hi;
  hi.resolution_scale = 2.0;
  check_against(NoiseSchedule::make(hi), ref["eq3_1_to_2"], ref["probe"]);
  check_against(NoiseSchedule::make({}).rescaled_for_resolution(2.0, 1.0), ref["eq3_2_to_1"], ref["probe"]);
}

TEST_CASE("scaled-linear endpoints and the EDM identities hold in closed form") {
  const NoiseSchedule s = NoiseSchedule::make({});
  REQUIRE(s.size() == 1000);
  CHECK(s.beta(0) == Approx(0.00085).epsilon(1e-12));
  CHECK(s.beta(999) == Approx(0.012).epsilon(1e-9));
  // beta_t = (sqrt(b0) + t/(T-1) (sqrt(b1) - sqrt(b0)))^2 at the midpoint
  const double mid = std::pow(std::sqrt(0.00085) + 500.0 / 999 * (std::sqrt(0.012) - std::sqrt(0.00085)), 2);
  CHECK(s.beta(500) == Approx(mid).epsilon(1e-9));
  for (int64_t t : {0, 100, 999}) {
    const double a = s.abar(t), sig = s.sigma(t);
    CHECK(sig * sig == Approx((1 - a) / a).epsilon(1e-12));
    CHECK(s.snr(t) == Approx(1.0 / (sig * sig)).epsilon(1e-12));
    CHECK(1.0 / std::sqrt(1 + sig * sig) ==
          Approx(std::sqrt(a)).epsilon(1e-12));  // x_t = (x0 + sigma eps)/sqrt(1+sigma^2)
  }
}

TEST_CASE("Eq. 3 scales the SNR by (s/s')^2, is the identity for s = s', and composes") {
  const NoiseSchedule base = NoiseSchedule::make({});
  const NoiseSchedule up = base.rescaled_for_resolution(1.0, 2.0);
  const NoiseSchedule same = base.rescaled_for_resolution(1.5, 1.5);
  const NoiseSchedule two_hops = base.rescaled_for_resolution(1.0, 1.5).rescaled_for_resolution(1.5, 2.0);
  for (int64_t t : {0, 10, 500, 999}) {
    INFO(t);
    CHECK(up.snr(t) == Approx(base.snr(t) / 4.0).epsilon(1e-10));
    CHECK(up.abar(t) < base.abar(t));  // more noise at the higher resolution
    CHECK(same.abar(t) == Approx(base.abar(t)).epsilon(1e-14));
    CHECK(two_hops.abar(t) == Approx(up.abar(t)).epsilon(1e-12));
  }
}

TEST_CASE("zero-terminal-SNR ends at abar = 0 and keeps abar_0") {
  ScheduleConfig c;
  c.zero_terminal_snr = true;
  const NoiseSchedule s = NoiseSchedule::make(c);
  CHECK(s.abar(999) == 0.0);
  CHECK(s.snr(999) == 0.0);
  CHECK(std::isinf(s.sigma(999)));
  CHECK(s.abar(0) == Approx(NoiseSchedule::make({}).abar(0)).epsilon(1e-14));
}

TEST_CASE("Eq. 4 guidance law and gamma_c match the reference and their closed forms") {
  const auto ref = test::numpy_reference();
  CHECK(guidance_scale_for_resolution(1.5, 2.0) == Approx(2.0));  // [S2]: 1.5 at 256 px -> 2.0 at 512 px
  const std::vector<std::pair<double, double>> cases = {{1.5, 1.0}, {1.5, 2.0}, {7.5, 0.5}, {3.0, 4.0}};
  for (size_t i = 0; i < cases.size(); ++i)
    CHECK(guidance_scale_for_resolution(cases[i].first, cases[i].second) == Approx(ref["eq4"][i].get<double>()));
  const auto ts = ref["gamma_t"];
  for (size_t i = 0; i < ts.size(); ++i) {
    const double t = ts[i];
    INFO("t = " << t);
    CHECK(power_cosine_gamma(t, 8.0) == Approx(ref["gamma_alpha8"][i].get<double>()).margin(1e-15));
    CHECK(power_cosine_gamma(t, 1.0) == Approx(ref["gamma_alpha1"][i].get<double>()).margin(1e-15));
    CHECK(power_cosine_gamma(t, 1.0) ==
          Approx(std::pow(std::sin(M_PI * (1 - t) / 2), 2)).margin(1e-15));  // half-angle form
  }
  CHECK(power_cosine_gamma(1.0) == 0.0);          // pure noise: low-level controls off
  CHECK(power_cosine_gamma(0.0) == Approx(1.0));  // clean end: full strength
  CHECK(power_cosine_gamma(0.5) < 0.05);          // alpha = 8 keeps them off for most of the trajectory
}

TEST_CASE("bad schedules are rejected with the field named") {
  ScheduleConfig c;
  c.beta_end = 0.0001;
  CHECK_THROWS_WITH(NoiseSchedule::make(c), Catch::Contains("schedule.beta_start"));
  CHECK_THROWS_WITH(NoiseSchedule({0.9, 0.95}), Catch::Contains("non-increasing"));
  CHECK_THROWS_WITH(NoiseSchedule::make({}).abar(1000), Catch::Contains("timestep 1000 outside"));
  CHECK_THROWS_WITH(parse_beta_schedule("schedule.kind", "quad"), Catch::Contains("schedule.kind"));
}
