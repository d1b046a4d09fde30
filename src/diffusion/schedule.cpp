#include "dtrainer/diffusion/schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "dtrainer/core/error.h"

namespace dtrainer::diffusion {

const NameTable<BetaSchedule>& name_table(BetaSchedule) {
  static const NameTable<BetaSchedule> t{{"scaled_linear", BetaSchedule::kScaledLinear},
                                         {"linear", BetaSchedule::kLinear},
                                         {"cosine", BetaSchedule::kCosine}};
  return t;
}
BetaSchedule parse_beta_schedule(const std::string& field, const std::string& text) {
  return name_table(BetaSchedule{}).parse(field, text);
}

NoiseSchedule NoiseSchedule::make(const ScheduleConfig& c) {
  const int64_t T = c.num_timesteps;
  if (T < 2) throw Error("schedule.num_timesteps", "must be at least 2");
  if (!(c.beta_start > 0 && c.beta_start < c.beta_end && c.beta_end < 1))
    throw Error("schedule.beta_start", "need 0 < beta_start < beta_end < 1");
  if (!(c.resolution_scale > 0)) throw Error("schedule.resolution_scale", "must be positive");
  std::vector<double> abar(T);
  double prod = 1.0;
  for (int64_t t = 0; t < T; ++t) {
    double beta = 0;
    const double frac = static_cast<double>(t) / (T - 1);
    switch (c.kind) {
      case BetaSchedule::kScaledLinear: {
        const double r = std::sqrt(c.beta_start) + frac * (std::sqrt(c.beta_end) - std::sqrt(c.beta_start));
        beta = r * r;
        break;
      }
      case BetaSchedule::kLinear: beta = c.beta_start + frac * (c.beta_end - c.beta_start); break;
      case BetaSchedule::kCosine: {
        auto f = [](double u) {
          const double v = std::cos((u + 0.008) / 1.008 * M_PI / 2);
          return v * v;
        };
        beta = std::min(1.0 - f(static_cast<double>(t + 1) / T) / f(static_cast<double>(t) / T), 0.999);
        break;
      }
    }
    prod *= 1.0 - beta;
    abar[t] = prod;
  }
  NoiseSchedule s(std::move(abar));
  if (c.zero_terminal_snr) s = s.with_zero_terminal_snr();
  if (c.resolution_scale != 1.0) s = s.rescaled_for_resolution(1.0, c.resolution_scale);
  return s;
}

NoiseSchedule::NoiseSchedule(std::vector<double> abar) : abar_(std::move(abar)) {
  if (abar_.size() < 2) throw Error("schedule", "needs at least 2 timesteps");
  if (!(abar_[0] > 0 && abar_[0] <= 1)) throw Error("schedule", "abar_0 must be in (0, 1]");
  for (size_t t = 1; t < abar_.size(); ++t)
    if (!(abar_[t] >= 0 && abar_[t] <= abar_[t - 1]))
      throw Error("schedule", "abar must be non-increasing and >= 0 (violated at t=" + std::to_string(t) + ")");
}

double NoiseSchedule::abar(int64_t t) const {
  if (t < 0 || t >= size())
    throw Error("schedule", "timestep " + std::to_string(t) + " outside [0, " + std::to_string(size()) + ")");
  return abar_[t];
}

double NoiseSchedule::beta(int64_t t) const { return 1.0 - abar(t) / (t == 0 ? 1.0 : abar(t - 1)); }

double NoiseSchedule::sigma(int64_t t) const {
  const double a = abar(t);
  return a > 0 ? std::sqrt((1 - a) / a) : std::numeric_limits<double>::infinity();
}

double NoiseSchedule::snr(int64_t t) const {
  const double a = abar(t);
  return a < 1 ? a / (1 - a) : std::numeric_limits<double>::infinity();
}

NoiseSchedule NoiseSchedule::rescaled_for_resolution(double s, double s2) const {
  if (!(s > 0 && s2 > 0)) throw Error("schedule.resolution_scale", "scales must be positive");
  std::vector<double> out(abar_.size());
  for (size_t t = 0; t < abar_.size(); ++t) {
    const double a = abar_[t];
    out[t] = s * s * a / (s2 * s2 + a * (s * s - s2 * s2));  // [S2] Eq. 3
  }
  return NoiseSchedule(std::move(out));
}

NoiseSchedule NoiseSchedule::with_zero_terminal_snr() const {
  const double first = std::sqrt(abar_.front()), last = std::sqrt(abar_.back());
  if (!(first > last)) throw Error("schedule.zero_terminal_snr", "schedule is constant; cannot rescale");
  std::vector<double> out(abar_.size());
  for (size_t t = 0; t < abar_.size(); ++t) {
    const double r = (std::sqrt(abar_[t]) - last) * first / (first - last);
    out[t] = r * r;
  }
  out.back() = 0.0;
  return NoiseSchedule(std::move(out));
}

double guidance_scale_for_resolution(double lam, double s) { return 1.0 + s * (lam - 1.0); }  // [S2] Eq. 4

double power_cosine_gamma(double t, double alpha) {
  return (1.0 - std::cos(M_PI * std::pow(1.0 - t, alpha))) / 2.0;  // [S2] power-cosine schedule
}

}  // namespace dtrainer::diffusion
