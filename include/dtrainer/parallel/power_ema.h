#pragma once
// Power-function EMA profiles and their post-hoc reconstruction (Karras et al. 2024, EDM2,
// "Analyzing and Improving the Training Dynamics of Diffusion Models", Sec. 3 and the appendix,
// whose equation numbers are cited).
//
// A profile with exponent gamma > 0 averages, at training time t (counted in images seen), the
// weights of every earlier time tau with density
//     p_t(tau) = (gamma + 1) tau^gamma / t^(gamma + 1),   0 <= tau <= t          (EDM2 eq. 121)
// Its width relative to t is  sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))  (eq. 123).
// During training it is tracked by one update per optimizer step,
//     avg <- beta avg + (1 - beta) theta,   beta = (1 - delta / t)^(gamma + 1)       (eq. 127)
// where t is the images seen after the step and delta the step's global batch. With the weights
// held constant over each step, this is exact: after n steps of a constant batch, the step k's
// weights carry (k^(gamma+1) - (k-1)^(gamma+1)) / n^(gamma+1), the profile's mass over that step.
//
// Any other profile (t_r, gamma_r) is reconstructed afterwards from saved snapshots (t_i, gamma_i)
// as sum_i w_i snapshot_i, with w the least-squares fit of the target profile by the snapshots'
// profiles in L2 (the normal equations A w = b over the profiles' inner products, eq. 151),
// normalised to sum to 1 (the result is an average). The weights depend only on the times and
// exponents, so they are solved once, in double precision, for a model of any size.

#include <cstdint>
#include <string>
#include <vector>

namespace dtrainer::parallel {

// sigma_rel at gamma = 0 (1 / sqrt 12, a plain running mean): every profile with gamma > 0 lies
// below it. A smaller sigma_rel weights the recent past more (gamma grows about as 1 / sigma_rel).
constexpr double kPhemaMaxSigmaRel = 0.28867513459481287;

// sigma_rel of exponent gamma (eq. 123), gamma > -1.
double phema_sigma_rel(double gamma);
// The exponent gamma > 0 of sigma_rel in (0, 1/sqrt 12); throws Error(field, ...) outside, naming
// the valid range. (The inverse of eq. 123 on gamma > 0, where sigma_rel falls monotonically.)
double phema_gamma(double sigma_rel, const std::string& field = "phema_sigma_rel");
// beta of the update that brings the images seen to `images_after` with a step of `batch` images.
double phema_beta(double gamma, double images_after, double batch);
// The name a profile's state carries in checkpoints and snapshots: "phema_0.05".
std::string phema_name(double sigma_rel);

// <p_a, p_b> = integral of p_{t_a}(tau; gamma_a) p_{t_b}(tau; gamma_b) over tau (eq. 151), in a
// form that neither overflows for large gamma nor loses precision for t_a << t_b.
double phema_inner_product(double t_a, double gamma_a, double t_b, double gamma_b);

struct PhemaProfile {
  double images = 0;  // t: images seen when the snapshot was taken (> 0)
  double gamma = 0;
};

struct PhemaSolution {
  std::vector<double> weights;  // one per snapshot, summing to 1
  // || p_target - sum w_i p_i ||^2 / || p_target ||^2: how well the snapshots represent the target
  // (0: exactly; tens of percent: the snapshots do not cover this width; take more or denser ones).
  double relative_error = 0;
};

// The reconstruction weights of `target` from `snapshots` (each images <= target.images is not
// required, but a snapshot later than the target averages weights the target never saw). Throws
// Error when there is no snapshot, a time is not positive, or the system is singular (a repeated
// snapshot).
PhemaSolution phema_solve(const std::vector<PhemaProfile>& snapshots, const PhemaProfile& target);

}  // namespace dtrainer::parallel
