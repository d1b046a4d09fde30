#include "dtrainer/analysis/power_fit.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <Kokkos_Core.hpp>
#include <ceres/ceres.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"

namespace dtrainer::analysis {

const NameTable<Frontier>& name_table(Frontier) {
  static const NameTable<Frontier> t{{"max", Frontier::kMax}, {"min", Frontier::kMin}, {"none", Frontier::kNone}};
  return t;
}

std::vector<size_t> pareto_frontier(const std::vector<double>& x, const std::vector<double>& y, Frontier f) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  if (f == Frontier::kNone) return order;
  // By x ascending; at equal x the better y first, so the worse one is dominated.
  std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) {
    if (x[i] != x[j]) return x[i] < x[j];
    return f == Frontier::kMax ? y[i] > y[j] : y[i] < y[j];
  });
  std::vector<size_t> out;
  for (size_t i : order)
    if (out.empty() || (f == Frontier::kMax ? y[i] > y[out.back()] : y[i] < y[out.back()])) out.push_back(i);
  return out;
}

double PowerFit::predict(double x) const { return a * std::pow(x, b); }
double SaturatingFit::predict(double x) const { return c + a * std::pow(x, b); }

PowerFit fit_power(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size()) throw Error("data", "x and y need the same length");
  if (x.size() < 3) throw Error("data", "need at least 3 points for a power fit, got " + std::to_string(x.size()));
  const double n = static_cast<double>(x.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!(std::isfinite(x[i]) && x[i] > 0))
      throw Error("point " + std::to_string(i + 1) + ", x", "must be finite and positive for a log fit");
    if (!(std::isfinite(y[i]) && y[i] > 0))
      throw Error("point " + std::to_string(i + 1) + ", y", "must be finite and positive for a log fit");
    const double lx = std::log(x[i]), ly = std::log(y[i]);
    sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
  }
  const double den = n * sxx - sx * sx;
  if (den <= 0) throw Error("data", "all x are equal: the exponent is undetermined");
  std::vector<double> xs = x;
  std::sort(xs.begin(), xs.end());
  const auto distinct = std::unique(xs.begin(), xs.end()) - xs.begin();
  if (distinct < 3)
    throw Error("data", "only " + std::to_string(distinct) +
                            " distinct x values: a power law through two clusters of points is "
                            "exact and says nothing; fit at least 3 distinct x");
  PowerFit f;
  f.b = (n * sxy - sx * sy) / den;
  const double loga = (sy - f.b * sx) / n;
  f.a = std::exp(loga);
  double ss_res = 0, ss_tot = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double ly = std::log(y[i]), pred = loga + f.b * std::log(x[i]);
    ss_res += (ly - pred) * (ly - pred);
    ss_tot += (ly - sy / n) * (ly - sy / n);
  }
  f.r2 = ss_tot > 0 ? 1 - ss_res / ss_tot : 1.0;
  f.n = static_cast<int64_t>(x.size());
  return f;
}

namespace {
struct SaturatingResidual {
  double x, y;
  template <typename T>
  bool operator()(const T* p, T* r) const {  // p = (a, b, c)
    r[0] = p[2] + p[0] * ceres::pow(T(x), p[1]) - T(y);
    return true;
  }
};
}  // namespace

SaturatingFit fit_saturating(const std::vector<double>& x, const std::vector<double>& y) {
  const PowerFit start = fit_power(x, y);
  double p[3] = {start.a, start.b, 0.0};
  ceres::Problem problem;
  for (size_t i = 0; i < x.size(); ++i)
    problem.AddResidualBlock(
        new ceres::AutoDiffCostFunction<SaturatingResidual, 1, 3>(new SaturatingResidual{x[i], y[i]}), nullptr, p);
  ceres::Solver::Options o;
  o.max_num_iterations = 500;
  o.function_tolerance = 1e-14;
  o.gradient_tolerance = 1e-14;
  o.parameter_tolerance = 1e-12;
  o.logging_type = ceres::SILENT;
  ceres::Solver::Summary s;
  ceres::Solve(o, &problem, &s);
  return {p[0], p[1], p[2]};
}

PowerBootstrap bootstrap_power(const std::vector<double>& x, const std::vector<double>& y, const PowerFit& fit,
                               int64_t resamples, uint64_t seed) {
  if (resamples < 2) throw Error("--bootstrap", "needs at least 2 resamples");
  const size_t n = x.size();
  std::vector<PowerFit> samples(resamples);
  std::vector<uint8_t> ok(resamples, 0);
  Kokkos::parallel_for(
      "bootstrap_power", Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace>(0, resamples), [&](int64_t r) {
        StreamRng rng(stream_key(seed, RngPurpose::kAugment, 0x90e7, static_cast<uint64_t>(r)));
        std::vector<double> bx, by;
        for (size_t i = 0; i < n; ++i) {
          const size_t k = std::min(n - 1, static_cast<size_t>(rng.uniform() * n));
          bx.push_back(x[k]);
          by.push_back(y[k]);
        }
        try {
          samples[r] = fit_power(bx, by);
          ok[r] = 1;
        } catch (const Error&) {  // a resample with fewer than 3 distinct x determines no law: not counted
        }
      });
  std::vector<PowerFit> kept;
  for (int64_t r = 0; r < resamples; ++r)
    if (ok[r]) kept.push_back(samples[r]);
  if (kept.size() < 2) throw Error("--bootstrap", "too few points with distinct x to bootstrap");
  auto summarise = [&](double est, auto get) {
    std::vector<double> v;
    for (const auto& s : kept) v.push_back(get(s));
    double mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size(), var = 0;
    for (double t : v) var += (t - mean) * (t - mean) / (v.size() - 1);
    std::sort(v.begin(), v.end());
    auto q = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))]; };
    return ParameterSummary{est, std::sqrt(var), q(0.025), q(0.975)};
  };
  PowerBootstrap b;
  b.a = summarise(fit.a, [](const PowerFit& f) { return f.a; });
  b.b = summarise(fit.b, [](const PowerFit& f) { return f.b; });
  b.samples = kept;
  return b;
}

}  // namespace dtrainer::analysis
