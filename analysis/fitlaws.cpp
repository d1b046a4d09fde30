// fitlaws — scaling-law fits for dtrainer studies.
//
//   fitlaws chinchilla (--data FILE | --runs DIR...) --n COL (--d COL | --flops COL) --loss COL
//                      [--drop-worst K] [--bootstrap B] [--seed S] [--json] [--plot FILE.svg|png]
//   fitlaws power (--data FILE | --runs DIR...) --x COL --y COL [--frontier max|min|none]
//                 [--saturating] [--bootstrap B] [--seed S] [--json] [--plot FILE.svg|png]
// With --runs, the columns are run, N, C (GFLOPs), D (image-noun pairs), step and --metric.

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <numeric>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "dtrainer/core/temp_files.h"
#include "dtrainer/analysis/chinchilla_fit.h"
#include "dtrainer/analysis/loglog_plot.h"
#include "dtrainer/analysis/power_fit.h"
#include "dtrainer/analysis/table.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/parse.h"

using namespace dtrainer;
using namespace dtrainer::analysis;
using nlohmann::ordered_json;

namespace {

struct Input {
  std::string data;
  std::vector<std::string> runs;
  std::string metric = "loss", pick = "final";
  long long step = -1;
  Table load() const {
    if (data.empty() == runs.empty()) throw Error("input", "give exactly one of --data FILE or --runs DIR...");
    if (!data.empty()) return read_csv(data);
    const RunPick p = name_table(RunPick{}).parse("--pick", pick);
    Table t = read_runs(runs, metric, p, step);
    for (const auto& n : t.notes) std::fprintf(stderr, "fitlaws: note: %s\n", n.c_str());
    return t;
  }
};

void add_input_options(CLI::App* app, Input& in) {
  app->add_option("--data", in.data, "CSV file with a header row of column names");
  app->add_option("--runs", in.runs, "dtrainer run directories (metrics.jsonl)");
  app->add_option("--metric", in.metric, "with --runs: the metric column")->capture_default_str();
  app->add_option("--pick", in.pick,
                  "with --runs: final | best (lowest) | highest | step | all (every record: each evaluation a point)")
      ->capture_default_str();
  app->add_option("--step", in.step, "with --pick step: the step to read");
}

std::vector<double> log_grid(double lo, double hi, int n) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i)
    v.push_back(std::pow(10.0, std::log10(lo) + (std::log10(hi) - std::log10(lo)) * i / (n - 1)));
  return v;
}

double quantile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

int run_chinchilla(const Input& in, const std::string& ncol, const std::string& dcol, const std::string& fcol,
                   const std::string& lcol, int64_t drop_worst, int64_t boot, uint64_t seed, bool json,
                   const std::string& plot) {
  if (dcol.empty() == fcol.empty())
    throw Error("--d/--flops", "give exactly one of --d COL or --flops COL (then D = FLOP / (6 N))");
  const Table t = in.load();
  ChinchillaData d;
  d.N = t.numeric(ncol);
  d.loss = t.numeric(lcol);
  if (!dcol.empty())
    d.D = t.numeric(dcol);
  else {
    const auto flops = t.numeric(fcol);
    for (size_t i = 0; i < flops.size(); ++i) d.D.push_back(flops[i] / (6.0 * d.N[i]));
  }
  if (drop_worst < 0 || drop_worst >= static_cast<int64_t>(d.N.size()))
    throw Error("--drop-worst", "must be in [0, points)");
  if (drop_worst > 0) {  // drop the K highest-loss points (Besiroglu et al. drop 5)
    std::vector<size_t> order(d.N.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return d.loss[a] < d.loss[b]; });
    order.resize(order.size() - drop_worst);
    std::sort(order.begin(), order.end());
    ChinchillaData kept;
    for (size_t i : order) kept.N.push_back(d.N[i]), kept.D.push_back(d.D[i]), kept.loss.push_back(d.loss[i]);
    d = kept;
  }
  const ChinchillaFit fit = fit_chinchilla(d);
  const bool with_boot = boot > 0;
  ChinchillaBootstrap b;
  if (with_boot) b = bootstrap_chinchilla(d, fit, boot, seed);
  const auto& p = fit.params;
  std::vector<double> compute = {1e18, 1e20, 1e22, 1e24, 1e26};
  const std::vector<std::string> warnings = chinchilla_warnings(p, with_boot ? &b : nullptr);
  for (const auto& w : warnings) std::fprintf(stderr, "fitlaws: warning: %s\n", w.c_str());
  if (json) {
    ordered_json j = {{"E", p.E},
                      {"A", p.A},
                      {"B", p.B},
                      {"alpha", p.alpha},
                      {"beta", p.beta},
                      {"objective", fit.objective},
                      {"points", d.N.size()},
                      {"dropped", drop_worst},
                      {"starts", fit.starts},
                      {"converged", fit.converged}};
    if (with_boot) {
      j["bootstrap"] = b.resamples;
      j["se"] = {{"E", b.E.se}, {"A", b.A.se}, {"B", b.B.se}, {"alpha", b.alpha.se}, {"beta", b.beta.se}};
      j["ci"] = {{"E", {b.E.lo, b.E.hi}},
                 {"A", {b.A.lo, b.A.hi}},
                 {"B", {b.B.lo, b.B.hi}},
                 {"alpha", {b.alpha.lo, b.alpha.hi}},
                 {"beta", {b.beta.lo, b.beta.hi}}};
    }
    ordered_json opt = ordered_json::array();
    for (double C : compute) {
      const ComputeOptimal o = compute_optimal(p, C);
      opt.push_back(
          {{"C", C}, {"N_opt", o.N}, {"D_opt", o.D}, {"tokens_per_param", o.tokens_per_param}, {"loss", o.loss}});
    }
    j["compute_optimal"] = opt;
    j["warnings"] = warnings;
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("Chinchilla fit  L(N, D) = E + A / N^alpha + B / D^beta   (%zu points%s)\n", d.N.size(),
                drop_worst ? (", " + std::to_string(drop_worst) + " highest-loss dropped").c_str() : "");
    std::printf(
        "objective (Huber, delta 1e-3, summed over points): %.6e   best of %lld L-BFGS starts (%lld converged)\n\n",
        fit.objective, static_cast<long long>(fit.starts), static_cast<long long>(fit.converged));
    std::printf("  %-6s %12s", "param", "estimate");
    if (with_boot)
      std::printf(" %10s   %s (%lld bootstrap resamples)", "se", "95% interval", static_cast<long long>(b.resamples));
    std::printf("\n");
    auto row = [&](const char* name, double v, const ParameterSummary& s) {
      std::printf("  %-6s %12.5g", name, v);
      if (with_boot) std::printf(" %10.4g   [%.5g, %.5g]", s.se, s.lo, s.hi);
      std::printf("\n");
    };
    row("E", p.E, b.E), row("A", p.A, b.A), row("B", p.B, b.B), row("alpha", p.alpha, b.alpha),
        row("beta", p.beta, b.beta);
    std::printf("\ncompute-optimal allocation (C = 6 N D):\n  %10s %12s %12s %10s %8s\n", "C (FLOP)", "N_opt", "D_opt",
                "D/N", "loss");
    for (double C : compute) {
      const ComputeOptimal o = compute_optimal(p, C);
      std::printf("  %10.0e %12.4g %12.4g %10.1f %8.4f\n", C, o.N, o.D, o.tokens_per_param, o.loss);
    }
  }
  if (!plot.empty()) {
    // Loss against training compute C = 6 N D: the points, the compute-optimal frontier of the
    // fitted law and its bootstrap band.
    std::vector<double> C;
    for (size_t i = 0; i < d.N.size(); ++i) C.push_back(6 * d.N[i] * d.D[i]);
    const auto [cmin, cmax] = std::minmax_element(C.begin(), C.end());
    const auto grid = log_grid(*cmin, *cmax, 80);
    std::vector<double> fit_loss, lo, hi;
    for (double c : grid) {
      fit_loss.push_back(compute_optimal(p, c).loss);
      if (with_boot) {
        std::vector<double> v;
        for (const auto& s : b.samples) v.push_back(compute_optimal(s, c).loss);
        lo.push_back(quantile(v, 0.025));
        hi.push_back(quantile(v, 0.975));
      }
    }
    LogLogPlot pl("Chinchilla fit: loss vs training compute", "training compute C = 6 N D (FLOP)", "loss");
    if (with_boot) pl.band(grid, lo, hi, "#1f77b4", "95% bootstrap band");
    pl.points(C, d.loss, "#888888", 2.5, "runs");
    pl.line(grid, fit_loss, "#1f77b4", 2, "compute-optimal L(C)");
    pl.write(plot);
    if (!json) std::printf("\nplot: %s\n", plot.c_str());
  }
  return 0;
}

int run_power(const Input& in, const std::string& xcol, const std::string& ycol, const std::string& frontier_text,
              bool saturating, int64_t boot, uint64_t seed, bool json, const std::string& plot) {
  const Frontier fr = name_table(Frontier{}).parse("--frontier", frontier_text);
  const Table t = in.load();
  const auto x = t.numeric(xcol), y = t.numeric(ycol);
  const auto idx = pareto_frontier(x, y, fr);
  std::vector<double> fx, fy;
  for (size_t i : idx) fx.push_back(x[i]), fy.push_back(y[i]);
  const PowerFit f = fit_power(fx, fy);
  PowerBootstrap b;
  if (boot > 0) b = bootstrap_power(fx, fy, f, boot, seed);
  SaturatingFit s;
  if (saturating) s = fit_saturating(fx, fy);
  if (json) {
    ordered_json j = {{"a", f.a},
                      {"b", f.b},
                      {"r2", f.r2},
                      {"points", x.size()},
                      {"frontier_points", fx.size()},
                      {"frontier", frontier_text}};
    if (boot > 0) {
      j["bootstrap"] = boot;
      j["se"] = {{"a", b.a.se}, {"b", b.b.se}};
      j["ci"] = {{"a", {b.a.lo, b.a.hi}}, {"b", {b.b.lo, b.b.hi}}};
    }
    if (saturating) j["saturating"] = {{"a", s.a}, {"b", s.b}, {"c", s.c}, {"form", "y = c + a x^b"}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("power law  %s = a * %s^b   on %zu frontier points (%s) of %zu\n", ycol.c_str(), xcol.c_str(),
                fx.size(), frontier_text.c_str(), x.size());
    std::printf("  a = %.6g   b = %.6g   R^2 (log space) = %.4f\n", f.a, f.b, f.r2);
    if (boot > 0)
      std::printf("  bootstrap (%lld): se(a) = %.4g, se(b) = %.4g; 95%% intervals a [%.5g, %.5g], b [%.5g, %.5g]\n",
                  static_cast<long long>(boot), b.a.se, b.b.se, b.a.lo, b.a.hi, b.b.lo, b.b.hi);
    if (saturating)
      std::printf("  saturating: %s = %.6g + %.6g * %s^%.6g\n", ycol.c_str(), s.c, s.a, xcol.c_str(), s.b);
  }
  if (!plot.empty()) {
    const auto [xmn, xmx] = std::minmax_element(x.begin(), x.end());
    const auto grid = log_grid(*xmn, *xmx, 80);
    std::vector<double> curve, lo, hi;
    for (double g : grid) {
      curve.push_back(f.predict(g));
      if (boot > 0) {
        std::vector<double> v;
        for (const auto& sm : b.samples) v.push_back(sm.predict(g));
        lo.push_back(quantile(v, 0.025));
        hi.push_back(quantile(v, 0.975));
      }
    }
    char title[160];
    std::snprintf(title, sizeof title, "%s = %.3g %s^%.3g  (R2 %.3f)", ycol.c_str(), f.a, xcol.c_str(), f.b, f.r2);
    LogLogPlot pl(title, xcol, ycol);
    if (boot > 0) pl.band(grid, lo, hi, "#d62728", "95% bootstrap band");
    pl.points(x, y, "#aaaaaa", 3, "all points");
    pl.points(fx, fy, "#000000", 4, "Pareto frontier");
    pl.line(grid, curve, "#d62728", 2, "power-law fit");
    pl.write(plot);
    if (!json) std::printf("plot: %s\n", plot.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard kokkos{Kokkos::InitArguments{}};  // not argc/argv: Kokkos would claim --help and --device
  quiet_solver_logging();
  dtrainer::remove_temp_files_on_signals();  // (an interrupted write leaves no FILE.tmp-PID behind)
  CLI::App app{
      "fitlaws: scaling-law fits (power laws on Pareto frontiers, Chinchilla form) with bootstrap uncertainty"};
  app.require_subcommand(1);
  Input in;
  std::string ncol, dcol, fcol, lcol, plot, xcol, ycol, frontier = "max";
  int64_t drop = 0, boot = 0;
  uint64_t seed = 0;
  bool json = false, saturating = false;

  CLI::App* ch = app.add_subcommand(
      "chinchilla", "fit L(N, D) = E + A/N^alpha + B/D^beta (Huber on log residuals, grid of L-BFGS starts)");
  add_input_options(ch, in);
  ch->add_option("--n", ncol, "column of model sizes N")->required();
  ch->add_option("--d", dcol, "column of data sizes D (tokens, image-noun pairs)");
  ch->add_option("--flops", fcol, "column of training FLOP (D = FLOP / (6 N))");
  ch->add_option("--loss", lcol, "column of losses")->required();
  ch->add_option("--drop-worst", drop, "drop the K highest-loss points")->capture_default_str();
  ch->add_option("--bootstrap", boot, "bootstrap resamples for standard errors and intervals (0 = none)")
      ->capture_default_str();
  ch->add_option("--seed", seed, "bootstrap seed")->capture_default_str();
  ch->add_flag("--json", json, "print JSON");
  ch->add_option("--plot", plot, "write a plot: FILE.svg or FILE.png");

  CLI::App* pw = app.add_subcommand("power", "fit y = a x^b on the Pareto frontier of (x, y)");
  add_input_options(pw, in);
  pw->add_option("--x", xcol, "column of x (compute, model size, data size)")->required();
  pw->add_option("--y", ycol, "column of y (score or loss)")->required();
  pw->add_option("--frontier", frontier, "max (scores) | min (losses) | none")->capture_default_str();
  pw->add_flag("--saturating", saturating, "also fit y = c + a x^b");
  pw->add_option("--bootstrap", boot, "bootstrap resamples (0 = none)")->capture_default_str();
  pw->add_option("--seed", seed, "bootstrap seed")->capture_default_str();
  pw->add_flag("--json", json, "print JSON");
  pw->add_option("--plot", plot, "write a plot: FILE.svg or FILE.png");

  CLI11_PARSE(app, argc, argv);
  try {
    auto ends = [&](const char* e) { return plot.size() > 4 && plot.compare(plot.size() - 4, 4, e) == 0; };
    if (!plot.empty() && !ends(".svg") && !ends(".png")) throw Error(plot, "--plot writes .svg or .png files");
    if (*ch) return run_chinchilla(in, ncol, dcol, fcol, lcol, drop, boot, seed, json, plot);
    return run_power(in, xcol, ycol, frontier, saturating, boot, seed, json, plot);
  } catch (const Error& e) {
    std::fprintf(stderr, "fitlaws: error: %s\n", e.what());
    return 2;
  }
}
