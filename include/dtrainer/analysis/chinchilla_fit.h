#pragma once
// Chinchilla-form loss law L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022), fitted
// the careful way (Besiroglu et al. 2024): in the log-sum-exp parametrisation
//   log L = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,
// minimising the Huber loss (delta = 1e-3) of the log residuals *summed* over points with
// L-BFGS (Ceres) from every start of a grid, keeping the best; bootstrap over points for
// uncertainty; compute-optimal allocation from the fitted law.

#include <cstdint>
#include <string>
#include <vector>

namespace dtrainer::analysis {

struct ChinchillaParams {
  double E = 0, A = 0, B = 0, alpha = 0, beta = 0;
  double predict(double N, double D) const;
};

struct ChinchillaData {
  std::vector<double> N, D, loss;  // model size, data size (tokens / image-noun pairs), loss
};

// Summed Huber loss of log residuals at `p` (the objective the fit minimises).
double chinchilla_objective(const ChinchillaParams& p, const ChinchillaData& data, double delta = 1e-3);

struct ChinchillaFitOptions {
  double delta = 1e-3;
  // Start grid (Hoffmann et al. / Besiroglu et al.): alpha, beta in {0, 0.5, ..., 2},
  // e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}: 4500 starts.
  std::vector<double> alpha_grid{0, 0.5, 1, 1.5, 2}, beta_grid{0, 0.5, 1, 1.5, 2};
  std::vector<double> e_grid{-1, -0.5, 0, 0.5, 1}, a_grid{0, 5, 10, 15, 20, 25}, b_grid{0, 5, 10, 15, 20, 25};
  int max_iterations = 2000;
};

struct ChinchillaFit {
  ChinchillaParams params;
  double objective = 0;
  int64_t starts = 0;     // grid starts tried
  int64_t converged = 0;  // starts whose L-BFGS run reported convergence
};

// Validates the data (finite, positive, >= 5 points; Error names the index), refuses data that
// cannot identify the law (fewer than 3 distinct N or D, or D a fixed power of N in every row:
// Error says which), and fits.
ChinchillaFit fit_chinchilla(const ChinchillaData& data, const ChinchillaFitOptions& options = {});
// One L-BFGS run from `start` (no grid).
ChinchillaFit refine_chinchilla(const ChinchillaData& data, const ChinchillaParams& start,
                                const ChinchillaFitOptions& options = {});

struct ParameterSummary {
  double estimate = 0, se = 0, lo = 0, hi = 0;  // bootstrap standard error and 95% percentile interval
};
struct ChinchillaBootstrap {
  ParameterSummary E, A, B, alpha, beta;
  std::vector<ChinchillaParams> samples;
  int64_t resamples = 0;
};

// Refits `resamples` resamples (points drawn with replacement, keyed by (seed, resample)) from the
// full-data fit and a small grid around it; Kokkos-parallel over resamples.
ChinchillaBootstrap bootstrap_chinchilla(const ChinchillaData& data, const ChinchillaFit& fit, int64_t resamples,
                                         uint64_t seed, const ChinchillaFitOptions& options = {});

// Compute-optimal allocation for training compute C = 6 N D:
//   N_opt = G (C/6)^(beta/(alpha+beta)),  D_opt = G^-1 (C/6)^(alpha/(alpha+beta)),
//   G = (alpha A / (beta B))^(1/(alpha+beta)).
struct ComputeOptimal {
  double C = 0, N = 0, D = 0, tokens_per_param = 0, loss = 0;
};
ComputeOptimal compute_optimal(const ChinchillaParams& p, double C);

// What makes a fit unusable although it converged: exponents at or below 0 (the loss does not
// fall with N or D) or implausibly steep, bootstrap intervals reaching 0, a compute-optimal loss
// that does not fall with compute. One sentence each; empty when none.
std::vector<std::string> chinchilla_warnings(const ChinchillaParams& p, const ChinchillaBootstrap* bootstrap);

// Ceres logs line-search details through glog as warnings; programs call this once to show
// errors only (process-wide, hence the programs' choice, not the fits').
void quiet_solver_logging();

}  // namespace dtrainer::analysis
