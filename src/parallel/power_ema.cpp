#include "dtrainer/parallel/power_ema.h"

#include <cmath>
#include <cstdio>

#include <torch/torch.h>

#include "dtrainer/core/error.h"

namespace dtrainer::parallel {

double phema_sigma_rel(double gamma) { return std::sqrt((gamma + 1) / ((gamma + 2) * (gamma + 2) * (gamma + 3))); }

double phema_gamma(double sigma_rel, const std::string& field) {
  if (!(sigma_rel > 0 && sigma_rel < kPhemaMaxSigmaRel)) {
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "%g is outside the power-function EMA's range: 0 < sigma_rel < %.4f (1/sqrt 12, where the exponent "
                  "gamma reaches 0; EDM2 uses 0.05 and 0.10 for training, 0.01-0.25 post hoc)",
                  sigma_rel, kPhemaMaxSigmaRel);
    throw Error(field, buf);
  }
  // sigma_rel falls monotonically on gamma > 0, from 1/sqrt 12 towards 0 (about 1 / gamma), so
  // bisection on [0, hi] finds the one exponent (to the last bit: 200 halvings of a double range).
  double lo = 0, hi = 2 / sigma_rel + 10;
  while (phema_sigma_rel(hi) > sigma_rel) hi *= 2;
  for (int i = 0; i < 200 && hi - lo > 0; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (mid == lo || mid == hi) break;
    (phema_sigma_rel(mid) > sigma_rel ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

double phema_beta(double gamma, double images_after, double batch) {
  if (!(batch > 0) || images_after < batch)
    throw Error("phema", "an update needs 0 < batch <= images seen after it (got batch " + std::to_string(batch) +
                             ", images " + std::to_string(images_after) + ")");
  return std::pow(1 - batch / images_after, gamma + 1);
}

std::string phema_name(double sigma_rel) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "phema_%.6g", sigma_rel);
  return buf;
}

// With t_a <= t_b (the integral runs to t_a):
//   (ga+1)(gb+1) t_a^(ga+gb+1) / ((ga+gb+1) t_a^(ga+1) t_b^(gb+1))
//   = (ga+1)(gb+1) / ((ga+gb+1) t_b) * (t_a / t_b)^gb
double phema_inner_product(double t_a, double gamma_a, double t_b, double gamma_b) {
  if (t_a > t_b) return phema_inner_product(t_b, gamma_b, t_a, gamma_a);
  return (gamma_a + 1) * (gamma_b + 1) / ((gamma_a + gamma_b + 1) * t_b) * std::pow(t_a / t_b, gamma_b);
}

PhemaSolution phema_solve(const std::vector<PhemaProfile>& snapshots, const PhemaProfile& target) {
  const int64_t n = static_cast<int64_t>(snapshots.size());
  if (n == 0) throw Error("phema", "no snapshots to reconstruct from");
  if (!(target.images > 0)) throw Error("phema", "the target time must be positive");
  for (const PhemaProfile& p : snapshots)
    if (!(p.images > 0)) throw Error("phema", "a snapshot at image 0 carries no average");
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor a = torch::empty({n, n}, f64), b = torch::empty({n, 1}, f64);
  auto A = a.accessor<double, 2>();
  auto B = b.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    B[i][0] = phema_inner_product(snapshots[i].images, snapshots[i].gamma, target.images, target.gamma);
    for (int64_t j = 0; j < n; ++j)
      A[i][j] = phema_inner_product(snapshots[i].images, snapshots[i].gamma, snapshots[j].images, snapshots[j].gamma);
  }
  torch::Tensor w;
  try {
    w = torch::linalg::solve(a, b, /*left=*/true);
  } catch (const std::exception& e) {
    throw Error("phema", "the snapshots' profiles are linearly dependent (a snapshot repeated?): " +
                             std::string(e.what()).substr(0, 200));
  }
  if (!torch::isfinite(w).all().item<bool>())
    throw Error("phema", "the reconstruction is singular (a snapshot repeated?)");
  w = w / w.sum();
  const double tt = phema_inner_product(target.images, target.gamma, target.images, target.gamma);
  const double err = tt - 2 * (w * b).sum().item<double>() + w.t().mm(a).mm(w).item<double>();
  PhemaSolution s;
  s.weights.assign(w.data_ptr<double>(), w.data_ptr<double>() + n);
  s.relative_error = std::max(0.0, err / tt);
  return s;
}

}  // namespace dtrainer::parallel
