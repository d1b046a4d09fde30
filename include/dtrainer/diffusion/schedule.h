#pragma once
// Discrete DDPM noise schedules (SPEC §3): abar_t for t = 0..T-1, and what derives from it.
// Torch-free, double precision.
//   x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps  =  (x0 + sigma_t eps) / sqrt(1 + sigma_t^2)
//   sigma_t = sqrt((1 - abar_t) / abar_t)   (EDM form),   SNR_t = abar_t / (1 - abar_t) = sigma_t^-2

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/core/name_table.h"

namespace dtrainer::diffusion {

enum class BetaSchedule {
  kScaledLinear,  // beta_t = (sqrt(b0) + t/(T-1) (sqrt(b1) - sqrt(b0)))^2   (SD / [S1])
  kLinear,        // beta_t = b0 + t/(T-1) (b1 - b0)                         (DDPM)
  kCosine,        // abar from cos^2(((t/T) + 0.008) / 1.008 * pi/2), betas capped at 0.999
};
const NameTable<BetaSchedule>& name_table(BetaSchedule);  // scaled_linear | linear | cosine
BetaSchedule parse_beta_schedule(const std::string& field, const std::string& text);

struct ScheduleConfig {
  BetaSchedule kind = BetaSchedule::kScaledLinear;
  int64_t num_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  bool zero_terminal_snr = false;  // rescale so abar_{T-1} = 0 (needs v-prediction)
  double resolution_scale = 1.0;   // s' / s of Eq. 3 (e.g. 2 when training 512 px from a 256 px schedule)
};

class NoiseSchedule {
 public:
  // Builds the schedule of `config`: betas, then zero-terminal-SNR, then Eq. 3 rescaling.
  static NoiseSchedule make(const ScheduleConfig& config);
  // From explicit abar values: non-increasing, in [0, 1], abar_0 > 0. Throws Error("schedule").
  explicit NoiseSchedule(std::vector<double> abar);

  int64_t size() const { return static_cast<int64_t>(abar_.size()); }
  double abar(int64_t t) const;
  double beta(int64_t t) const;   // 1 - abar_t / abar_{t-1}, with abar_{-1} = 1
  double sigma(int64_t t) const;  // sqrt((1 - abar) / abar); +inf where abar = 0
  double snr(int64_t t) const;    // abar / (1 - abar)
  const std::vector<double>& abar_values() const { return abar_; }

  // [S2] Eq. 3: the schedule for resolution scale s_to of one designed for s_from:
  //   abar' = s^2 abar / (s'^2 + abar (s^2 - s'^2)),  i.e. SNR' = (s / s')^2 SNR.
  NoiseSchedule rescaled_for_resolution(double s_from, double s_to) const;
  // Lin et al.: shift and scale sqrt(abar) so that abar_{T-1} = 0 and abar_0 is unchanged.
  NoiseSchedule with_zero_terminal_snr() const;

 private:
  std::vector<double> abar_;
};

// [S2] Eq. 4: guidance scale at resolution scale s for a scale `lam` tuned at s = 1:
//   lam'(s) = 1 + s (lam - 1)   (1.5 at 256 px -> 2.0 at 512 px).
double guidance_scale_for_resolution(double lam, double s);

// [S2] power-cosine weight of the low-level controls: gamma_c(t) = (1 - cos(pi (1 - t)^alpha)) / 2,
// t in [0, 1] with t = 1 pure noise: 0 early in denoising, 1 at the end.
double power_cosine_gamma(double t, double alpha = 8.0);

}  // namespace dtrainer::diffusion
