#include "dtrainer/analysis/chinchilla_fit.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <tuple>

#include <Kokkos_Core.hpp>
#include <ceres/ceres.h>
#include <glog/logging.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"

namespace dtrainer::analysis {

double ChinchillaParams::predict(double N, double D) const {
  return E + A / std::pow(N, alpha) + B / std::pow(D, beta);
}

namespace {

struct Point {
  double logN, logD, logL;
};

// x = (a, b, e, alpha, beta)
class HuberLogLse final : public ceres::FirstOrderFunction {
 public:
  HuberLogLse(const std::vector<Point>& pts, double delta) : pts_(pts), delta_(delta) {}
  int NumParameters() const override { return 5; }
  bool Evaluate(const double* x, double* cost, double* grad) const override {
    double f = 0, g[5] = {0, 0, 0, 0, 0};
    for (const Point& p : pts_) {
      const double t1 = x[0] - x[3] * p.logN, t2 = x[1] - x[4] * p.logD, t3 = x[2];
      const double m = std::max({t1, t2, t3});
      const double e1 = std::exp(t1 - m), e2 = std::exp(t2 - m), e3 = std::exp(t3 - m), s = e1 + e2 + e3;
      const double r = m + std::log(s) - p.logL;  // log-space residual
      const double ar = std::abs(r);
      f += ar <= delta_ ? 0.5 * r * r : delta_ * (ar - 0.5 * delta_);  // Huber, summed
      if (grad) {
        const double dr = ar <= delta_ ? r : (r > 0 ? delta_ : -delta_);
        const double w1 = e1 / s, w2 = e2 / s, w3 = e3 / s;
        g[0] += dr * w1;
        g[1] += dr * w2;
        g[2] += dr * w3;
        g[3] -= dr * w1 * p.logN;
        g[4] -= dr * w2 * p.logD;
      }
    }
    *cost = f;
    if (grad) std::copy(g, g + 5, grad);
    return std::isfinite(f);
  }

 private:
  const std::vector<Point>& pts_;
  double delta_;
};

std::vector<Point> to_points(const ChinchillaData& d) {
  if (d.N.size() != d.D.size() || d.N.size() != d.loss.size())
    throw Error("data", "N, D and loss need the same length");
  if (d.N.size() < 5)
    throw Error("data", "need at least 5 points to fit 5 parameters, got " + std::to_string(d.N.size()));
  std::vector<Point> pts;
  for (size_t i = 0; i < d.N.size(); ++i) {
    for (const auto& [name, v] : {std::pair<const char*, double>{"N", d.N[i]}, {"D", d.D[i]}, {"loss", d.loss[i]}})
      if (!std::isfinite(v) || v <= 0)
        throw Error(std::string("row ") + std::to_string(i + 1) + ", " + name,
                    "must be finite and positive for a log-space fit, got " + std::to_string(v));
    pts.push_back({std::log(d.N[i]), std::log(d.D[i]), std::log(d.loss[i])});
  }
  return pts;
}

// Identifiability (of the data a fit is asked for; bootstrap resamples are not checked): each of A / N^alpha and B /
// D^beta needs at least three distinct levels of its variable beside E, and N and D must vary independently (not D = k
// N^c in every row).
void check_identifiable(const ChinchillaData& d, const std::vector<Point>& pts) {
  auto distinct = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return static_cast<int64_t>(
        std::unique(v.begin(), v.end(), [](double a, double b) { return std::abs(a - b) <= 1e-9 * std::abs(a); }) -
        v.begin());
  };
  const int64_t dn = distinct(d.N), dd = distinct(d.D);
  if (dn < 3 || dd < 3)
    throw Error("data", "the points cannot identify the law: " + std::to_string(dn) + " distinct N and " +
                            std::to_string(dd) +
                            " distinct D (each term needs at least 3 distinct values; L(N, D) has 5 parameters)");
  double mx = 0, my = 0;
  for (const auto& p : pts) mx += p.logN, my += p.logD;
  mx /= static_cast<double>(pts.size()), my /= static_cast<double>(pts.size());
  double sxx = 0, syy = 0, sxy = 0;
  for (const auto& p : pts)
    sxx += (p.logN - mx) * (p.logN - mx), syy += (p.logD - my) * (p.logD - my), sxy += (p.logN - mx) * (p.logD - my);
  if (sxx > 0 && syy > 0 && std::abs(sxy) / std::sqrt(sxx * syy) > 0.9999)
    throw Error("data",
                "D is a fixed power of N in every row (log D and log N correlate at |r| > 0.9999): the N and D terms "
                "cannot be separated; add runs that vary N at fixed D (or D at fixed N)");
}

ChinchillaParams from_x(const double* x) { return {std::exp(x[2]), std::exp(x[0]), std::exp(x[1]), x[3], x[4]}; }

ChinchillaFit solve(const std::vector<Point>& pts, double x[5], const ChinchillaFitOptions& o) {
  ceres::GradientProblem problem(new HuberLogLse(pts, o.delta));
  ceres::GradientProblemSolver::Options opts;
  opts.line_search_direction_type = ceres::LBFGS;
  opts.max_num_iterations = o.max_iterations;
  // Tight tolerances: stopping early is how published fits went wrong.
  opts.function_tolerance = 1e-14;
  opts.gradient_tolerance = 1e-12;
  opts.parameter_tolerance = 1e-12;
  opts.logging_type = ceres::SILENT;
  ceres::GradientProblemSolver::Summary summary;
  ceres::Solve(opts, problem, x, &summary);
  ChinchillaFit fit;
  fit.params = from_x(x);
  fit.objective = summary.final_cost;
  fit.starts = 1;
  fit.converged = summary.termination_type == ceres::CONVERGENCE;
  return fit;
}

}  // namespace

double chinchilla_objective(const ChinchillaParams& p, const ChinchillaData& data, double delta) {
  const std::vector<Point> pts = to_points(data);
  const double x[5] = {std::log(p.A), std::log(p.B), std::log(p.E), p.alpha, p.beta};
  double f = 0;
  HuberLogLse(pts, delta).Evaluate(x, &f, nullptr);
  return f;
}

ChinchillaFit refine_chinchilla(const ChinchillaData& data, const ChinchillaParams& start,
                                const ChinchillaFitOptions& o) {
  const std::vector<Point> pts = to_points(data);
  double x[5] = {std::log(start.A), std::log(start.B), std::log(start.E), start.alpha, start.beta};
  return solve(pts, x, o);
}

ChinchillaFit fit_chinchilla(const ChinchillaData& data, const ChinchillaFitOptions& o) {
  const std::vector<Point> pts = to_points(data);
  check_identifiable(data, pts);
  ChinchillaFit best;
  best.objective = std::numeric_limits<double>::infinity();
  int64_t starts = 0, converged = 0;
  for (double a : o.a_grid)
    for (double b : o.b_grid)
      for (double e : o.e_grid)
        for (double al : o.alpha_grid)
          for (double be : o.beta_grid) {
            double x[5] = {a, b, e, al, be};
            const ChinchillaFit f = solve(pts, x, o);
            ++starts;
            converged += f.converged;
            if (std::isfinite(f.objective) && f.objective < best.objective) best = f;
          }
  best.starts = starts;
  best.converged = converged;
  if (!std::isfinite(best.objective)) throw Error("fit", "no start of the grid produced a finite objective");
  return best;
}

ChinchillaBootstrap bootstrap_chinchilla(const ChinchillaData& data, const ChinchillaFit& fit, int64_t resamples,
                                         uint64_t seed, const ChinchillaFitOptions& o) {
  if (resamples < 2) throw Error("--bootstrap", "needs at least 2 resamples");
  check_identifiable(data, to_points(data));  // (validates)
  const size_t n = data.N.size();
  std::vector<ChinchillaParams> samples(resamples);
  // A few starts per resample: the full-data optimum and perturbations of its exponents.
  const ChinchillaParams p0 = fit.params;
  Kokkos::parallel_for("bootstrap_chinchilla", Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace>(0, resamples),
                       [&](int64_t r) {
                         StreamRng rng(stream_key(seed, RngPurpose::kAugment, 0xb0075, static_cast<uint64_t>(r)));
                         ChinchillaData d;
                         for (size_t i = 0; i < n; ++i) {
                           const size_t k = std::min(n - 1, static_cast<size_t>(rng.uniform() * n));
                           d.N.push_back(data.N[k]);
                           d.D.push_back(data.D[k]);
                           d.loss.push_back(data.loss[k]);
                         }
                         ChinchillaFit best = refine_chinchilla(d, p0, o);
                         for (double s : {0.8, 1.25}) {
                           ChinchillaParams start = p0;
                           start.alpha *= s;
                           start.beta *= s;
                           const ChinchillaFit f = refine_chinchilla(d, start, o);
                           if (f.objective < best.objective) best = f;
                         }
                         samples[r] = best.params;
                       });
  auto summarise = [&](double estimate, auto get) {
    std::vector<double> v;
    for (const auto& s : samples) v.push_back(get(s));
    double mean = 0;
    for (double x : v) mean += x / v.size();
    double var = 0;
    for (double x : v) var += (x - mean) * (x - mean) / (v.size() - 1);
    std::sort(v.begin(), v.end());
    auto q = [&](double p) { return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))]; };
    return ParameterSummary{estimate, std::sqrt(var), q(0.025), q(0.975)};
  };
  ChinchillaBootstrap b;
  b.resamples = resamples;
  b.E = summarise(p0.E, [](const ChinchillaParams& s) { return s.E; });
  b.A = summarise(p0.A, [](const ChinchillaParams& s) { return s.A; });
  b.B = summarise(p0.B, [](const ChinchillaParams& s) { return s.B; });
  b.alpha = summarise(p0.alpha, [](const ChinchillaParams& s) { return s.alpha; });
  b.beta = summarise(p0.beta, [](const ChinchillaParams& s) { return s.beta; });
  b.samples = std::move(samples);
  return b;
}

std::vector<std::string> chinchilla_warnings(const ChinchillaParams& p, const ChinchillaBootstrap* b) {
  std::vector<std::string> out;
  auto fmt = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    return std::string(buf);
  };
  for (const auto& [name, v, var] :
       {std::tuple<const char*, double, const char*>{"alpha", p.alpha, "N"}, {"beta", p.beta, "D"}}) {
    if (v <= 0.01)
      out.push_back(std::string(name) + " = " + fmt(v) + ": the loss does not fall with " + var +
                    " (not a scaling law: too little spread in " + var + ", or a fit to noise)");
    else if (v > 3)
      out.push_back(std::string(name) + " = " + fmt(v) + ": steeper than any published loss law (check the " + var +
                    " column)");
  }
  if (b) {
    for (const auto& [name, s] :
         {std::pair<const char*, const ParameterSummary*>{"alpha", &b->alpha}, {"beta", &b->beta}})
      if (s->lo <= 0.01)
        out.push_back(std::string(name) + "'s 95% interval [" + fmt(s->lo) + ", " + fmt(s->hi) +
                      "] reaches 0: its effect is not resolved by these points");
  }
  std::vector<double> losses;
  for (double C : {1e18, 1e20, 1e22, 1e24, 1e26}) losses.push_back(compute_optimal(p, C).loss);
  if (!std::all_of(losses.begin(), losses.end(), [](double l) { return std::isfinite(l); })) {
    out.push_back(
        "the compute-optimal loss does not fall as compute grows (the allocation is undefined for these exponents): "
        "the fit is not usable for allocation");
  } else {
    for (size_t i = 1; i < losses.size(); ++i)
      if (!(losses[i] < losses[i - 1])) {
        out.push_back("the compute-optimal loss does not fall as compute grows (" + fmt(losses[i - 1]) + " -> " +
                      fmt(losses[i]) + "): the fit is not usable for allocation");
        break;
      }
  }
  return out;
}

ComputeOptimal compute_optimal(const ChinchillaParams& p, double C) {
  const double s = p.alpha + p.beta;
  const double G = std::pow(p.alpha * p.A / (p.beta * p.B), 1.0 / s);
  ComputeOptimal o;
  o.C = C;
  o.N = G * std::pow(C / 6.0, p.beta / s);
  o.D = std::pow(C / 6.0, p.alpha / s) / G;
  o.tokens_per_param = o.D / o.N;
  o.loss = p.predict(o.N, o.D);
  return o;
}

void quiet_solver_logging() {
  FLAGS_minloglevel = 2;
  FLAGS_logtostderr = true;
}

}  // namespace dtrainer::analysis
