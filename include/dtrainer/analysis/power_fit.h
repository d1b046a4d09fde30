#pragma once
// Power laws S = a X^b on the Pareto frontier of (X, S) points ([S1] §5).

#include <cstdint>
#include <vector>

#include "dtrainer/analysis/chinchilla_fit.h"

#include "dtrainer/core/name_table.h"

namespace dtrainer::analysis {

enum class Frontier { kNone, kMax, kMin };
const NameTable<Frontier>& name_table(Frontier);  // max | min | none
// Indices of the frontier points, by increasing x: kMax keeps a point when no point with smaller
// or equal x has a larger-or-equal y (the best score reached so far); kMin the same for lowest y.
std::vector<size_t> pareto_frontier(const std::vector<double>& x, const std::vector<double>& y, Frontier f);

struct PowerFit {
  double a = 0, b = 0;  // y = a x^b, least squares in log-log space
  double r2 = 0;        // coefficient of determination of log y
  int64_t n = 0;
  double predict(double x) const;
};
// Validates (>= 3 points, finite, positive; Error names the index) and fits.
PowerFit fit_power(const std::vector<double>& x, const std::vector<double>& y);

// Saturating form y = c + a x^b (least squares in y, Ceres, from the power fit).
struct SaturatingFit {
  double a = 0, b = 0, c = 0;
  double predict(double x) const;
};
SaturatingFit fit_saturating(const std::vector<double>& x, const std::vector<double>& y);

struct PowerBootstrap {
  ParameterSummary a, b;
  std::vector<PowerFit> samples;
};
// Refits resamples of the points (with replacement, keyed by (seed, resample)); Kokkos-parallel.
PowerBootstrap bootstrap_power(const std::vector<double>& x, const std::vector<double>& y, const PowerFit& fit,
                               int64_t resamples, uint64_t seed);

}  // namespace dtrainer::analysis
