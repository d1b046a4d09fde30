#include "dtrainer/study/study_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "dtrainer/analysis/loglog_plot.h"
#include "dtrainer/analysis/power_fit.h"
#include "dtrainer/analysis/table.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/study/study_file.h"

namespace fs = std::filesystem;

namespace dtrainer::study {
namespace {

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

std::string fmt(double v, const char* f = "%.4g") {
  char b[48];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

struct Points {
  std::vector<double> x, y;
};

// One fit's result over one group of runs.
struct GroupFit {
  std::string group;
  Points all, frontier;
  bool fitted = false;
  analysis::PowerFit fit;
  bool bootstrapped = false;
  analysis::PowerBootstrap boot;
  std::string note;
};

// One post-hoc EMA's alignment score (dteval alignment --weights-file on a dtckpt phema file).
struct PosthocScore {
  double sigma_rel = 0, score = 0, lo = 0, hi = 0;
};

struct RunRow {
  std::string name, families;
  fs::path dir;
  int64_t params = 0, steps = 0;
  double compute = 0;
  nlohmann::json last_alignment, last_eval;
  bool has_records = false;
  int64_t posthoc_images = 0;         // the newest time with post-hoc scores
  std::vector<PosthocScore> posthoc;  // at that time, by sigma_rel
};

std::string read_file_or_empty(const fs::path& p) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return "";
  try {
    return read_file(p);
  } catch (const Error&) {
    return "";
  }
}

// The run's post-hoc EMA scores at the newest time that has any: RUN/alignment/*/ whose
// manifest.json names a phema sigma_rel (dteval records it from the weights file).
void read_posthoc_scores(RunRow& row) {
  std::error_code ec;
  const fs::path dir = row.dir / "alignment";
  if (!fs::is_directory(dir, ec)) return;
  std::vector<std::pair<int64_t, PosthocScore>> all;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const nlohmann::json m = nlohmann::json::parse(read_file_or_empty(e.path() / "manifest.json"), nullptr, false);
    const nlohmann::json a = nlohmann::json::parse(read_file_or_empty(e.path() / "alignment.json"), nullptr, false);
    if (!m.is_object() || !a.is_object() || !m.contains("phema") || !m["phema"].is_object() || !a.contains("score"))
      continue;
    PosthocScore p;
    p.sigma_rel = m["phema"].value("sigma_rel", 0.0);
    p.score = a["score"].get<double>();
    if (a.contains("interval") && a["interval"].size() == 2) p.lo = a["interval"][0], p.hi = a["interval"][1];
    all.emplace_back(m["phema"].value("at_images", int64_t{0}), p);
  }
  for (const auto& [images, p] : all) row.posthoc_images = std::max(row.posthoc_images, images);
  for (const auto& [images, p] : all)
    if (images == row.posthoc_images) row.posthoc.push_back(p);
  std::sort(row.posthoc.begin(), row.posthoc.end(),
            [](const PosthocScore& a, const PosthocScore& b) { return a.sigma_rel < b.sigma_rel; });
}

GroupFit fit_group(const std::string& group, const Points& p, analysis::Frontier frontier, int64_t bootstrap,
                   uint64_t seed) {
  GroupFit g;
  g.group = group;
  g.all = p;
  if (p.x.empty()) {
    g.note = "no points";
    return g;
  }
  for (size_t i : analysis::pareto_frontier(p.x, p.y, frontier)) {
    g.frontier.x.push_back(p.x[i]);
    g.frontier.y.push_back(p.y[i]);
  }
  const std::set<double> distinct(g.frontier.x.begin(), g.frontier.x.end());
  if (distinct.size() < 3) {
    g.note = std::to_string(g.frontier.x.size()) + " frontier point(s) at " + std::to_string(distinct.size()) +
             " distinct x: a law needs 3";
    return g;
  }
  try {
    g.fit = analysis::fit_power(g.frontier.x, g.frontier.y);
    g.fitted = true;
    if (bootstrap > 0) {
      g.boot = analysis::bootstrap_power(g.frontier.x, g.frontier.y, g.fit, bootstrap, seed);
      g.bootstrapped = true;
    }
  } catch (const Error& e) {
    g.note = e.detail();
  }
  return g;
}

nlohmann::json group_json(const GroupFit& g) {
  nlohmann::json j = {{"group", g.group}, {"points", g.all.x.size()}, {"frontier_points", g.frontier.x.size()}};
  if (g.fitted) {
    j["a"] = g.fit.a;
    j["b"] = g.fit.b;
    j["r2"] = g.fit.r2;
  }
  if (g.bootstrapped) {
    j["ci"] = {{"a", {g.boot.a.lo, g.boot.a.hi}}, {"b", {g.boot.b.lo, g.boot.b.hi}}};
    j["se"] = {{"a", g.boot.a.se}, {"b", g.boot.b.se}};
  }
  if (!g.note.empty()) j["note"] = g.note;
  return j;
}

std::string axis_label(const std::string& x) {
  return x == "C"   ? "training compute C (GFLOPs, [S1]: 6 x linear/conv MACs x samples)"
         : x == "N" ? "parameters N"
                    : "image-noun pairs seen D";
}

}  // namespace

std::vector<std::string> write_study_report(const fs::path& dir, const ReportOptions& options) {
  std::error_code ec;
  if (!fs::exists(dir / "plan.json", ec))
    throw Error(dir.string(), "not a study directory (no plan.json: `dtstudy run STUDY.toml` makes one)");
  const nlohmann::json plan = nlohmann::json::parse(read_file(dir / "plan.json"), nullptr, false);
  if (!plan.is_object() || !plan.contains("runs") || !plan.contains("fits"))
    throw Error((dir / "plan.json").string(), "not a study plan of this dtstudy (rerun `dtstudy run` to rewrite it)");
  std::vector<std::string> notes;
  const std::vector<std::string> families = plan["families"].get<std::vector<std::string>>();
  const int64_t bootstrap = plan.value("bootstrap", int64_t{200});
  const uint64_t seed = plan.value("seed", uint64_t{1});

  std::vector<RunRow> rows;
  for (const auto& r : plan["runs"]) {
    RunRow row;
    row.name = r["name"].get<std::string>();
    for (const auto& f : r["families"]) row.families += (row.families.empty() ? "" : ", ") + f.get<std::string>();
    row.dir = r["run_dir"].get<std::string>();
    row.params = r["params"].get<int64_t>();
    row.steps = r["steps"].get<int64_t>();
    row.compute = r["compute_gflops"].get<double>();
    std::ifstream in(row.dir / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      row.has_records = true;
      if (j.contains("alignment") && j["alignment"].is_number()) row.last_alignment = j;
      if (j.contains("eval_loss") && j["eval_loss"].is_number()) row.last_eval = j;
    }
    if (!row.has_records)
      notes.push_back("run " + row.name + ": no records yet (" + (row.dir / "metrics.jsonl").string() + ")");
    read_posthoc_scores(row);
    rows.push_back(std::move(row));
  }
  if (std::none_of(rows.begin(), rows.end(), [](const RunRow& r) { return r.has_records; }))
    throw Error(dir.string(),
                "no run has records yet (`dtstudy run` trains them; `dtstudy status` shows where they are)");

  std::string md = "# Study " + plan.value("study", std::string()) + "\n\n";
  nlohmann::json prov = nlohmann::json::parse(
      fs::exists(dir / "provenance.json", ec) ? read_file(dir / "provenance.json") : "{}", nullptr, false);
  md += "Study file `" + plan.value("file", std::string()) + "` (copied as `study.toml`), commit `" +
        (prov.is_object() ? prov.value("commit", std::string("unknown")) : std::string("unknown")) + "`, " +
        std::to_string(plan.value("ranks", 0)) + " ranks per run, budget " + plan.value("budget", std::string()) +
        ". Each run's exact job file is `configs/RUN.toml`; the commands are in `commands.sh`.\n\n";
  md +=
      "## Runs\n\n| run | families | N | steps | C (GFLOPs) | last alignment [95%] | last held-out loss |\n"
      "|---|---|---|---|---|---|---|\n";
  nlohmann::json runs_json = nlohmann::json::array();
  for (const RunRow& r : rows) {
    std::string align = "—", eval = "—";
    nlohmann::json rj = {{"name", r.name}, {"params", r.params}, {"steps", r.steps}, {"compute_gflops", r.compute}};
    if (!r.last_alignment.is_null()) {
      align = fmt(r.last_alignment["alignment"].get<double>(), "%.3f");
      if (r.last_alignment.contains("alignment_interval"))
        align += " [" + fmt(r.last_alignment["alignment_interval"][0].get<double>(), "%.3f") + ", " +
                 fmt(r.last_alignment["alignment_interval"][1].get<double>(), "%.3f") + "]";
      align += " @" + std::to_string(r.last_alignment["step"].get<int64_t>());
      rj["alignment"] = r.last_alignment["alignment"];
      rj["alignment_step"] = r.last_alignment["step"];
    }
    if (!r.last_eval.is_null()) {
      eval = fmt(r.last_eval["eval_loss"].get<double>()) + " @" + std::to_string(r.last_eval["step"].get<int64_t>());
      rj["eval_loss"] = r.last_eval["eval_loss"];
    }
    md += "| " + r.name + " | " + r.families + " | " + std::to_string(r.params) + " | " + std::to_string(r.steps) +
          " | " + fmt(r.compute, "%.0f") + " | " + align + " | " + eval + " |\n";
    if (!r.posthoc.empty()) {
      const auto best =
          std::max_element(r.posthoc.begin(), r.posthoc.end(),
                           [](const PosthocScore& a, const PosthocScore& b) { return a.score < b.score; });
      nlohmann::json scores = nlohmann::json::array();
      for (const auto& p : r.posthoc)
        scores.push_back({{"sigma_rel", p.sigma_rel}, {"alignment", p.score}, {"interval", {p.lo, p.hi}}});
      rj["posthoc_ema"] = {{"at_images", r.posthoc_images},
                           {"scores", scores},
                           {"best_sigma_rel", best->sigma_rel},
                           {"best_alignment", best->score}};
    }
    runs_json.push_back(rj);
  }
  // Post-hoc EMA (EDM2): each run's alignment over the sigma_rel reconstructed for it, and the best.
  if (std::any_of(rows.begin(), rows.end(), [](const RunRow& r) { return !r.posthoc.empty(); })) {
    md +=
        "\n## Post-hoc EMA\n\nAlignment of each run's weights averaged post hoc (`dtckpt phema`, scored by `dteval "
        "alignment --weights-file`) at the newest time scored; the best sigma_rel in bold. A fit over each run's best "
        "compares the models at their own best averaging, not at one fixed EMA.\n\n| run | images | alignment by "
        "sigma_rel | best sigma_rel |\n|---|---|---|---|\n";
    for (const RunRow& r : rows) {
      if (r.posthoc.empty()) continue;
      const auto best =
          std::max_element(r.posthoc.begin(), r.posthoc.end(),
                           [](const PosthocScore& a, const PosthocScore& b) { return a.score < b.score; });
      std::string cells;
      for (const auto& p : r.posthoc) {
        const std::string c = fmt(p.sigma_rel, "%g") + ": " + fmt(p.score, "%.3f");
        cells += (cells.empty() ? "" : ", ") + (&p == &*best ? "**" + c + "**" : c);
      }
      md += "| " + r.name + " | " + std::to_string(r.posthoc_images) + " | " + cells + " | " +
            fmt(best->sigma_rel, "%g") + " |\n";
    }
  }

  nlohmann::json fits_json = nlohmann::json::array();
  if (!plan["fits"].empty()) md += "\n## Fits\n";
  fs::create_directories(dir / "plots", ec);
  for (const auto& f : plan["fits"]) {
    const std::string name = f["name"].get<std::string>(), y = f["y"].get<std::string>(), x = f["x"].get<std::string>();
    const analysis::Frontier frontier =
        name_table(analysis::Frontier{}).parse("frontier", f["frontier"].get<std::string>());
    const analysis::RunPick pick = name_table(analysis::RunPick{}).parse("pick", f["pick"].get<std::string>());
    // Each run's points, once.
    std::vector<Points> per_run(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      if (!rows[i].has_records) continue;
      try {
        const analysis::Table t = analysis::read_runs({rows[i].dir.string()}, y, pick);
        per_run[i].x = t.numeric(x);
        per_run[i].y = t.numeric(y);
      } catch (const Error& e) {
        notes.push_back("fit " + name + ": run " + rows[i].name + " left out: " + e.what());
      }
    }
    std::vector<GroupFit> groups;
    for (const std::string& fam : families) {
      Points p;
      for (size_t i = 0; i < rows.size(); ++i) {
        const auto& fl = plan["runs"][i]["families"];
        if (std::find(fl.begin(), fl.end(), fam) == fl.end()) continue;
        p.x.insert(p.x.end(), per_run[i].x.begin(), per_run[i].x.end());
        p.y.insert(p.y.end(), per_run[i].y.begin(), per_run[i].y.end());
      }
      groups.push_back(fit_group(fam, p, frontier, bootstrap, seed));
    }
    if (families.size() > 1) {
      Points p;
      for (const Points& r : per_run) {
        p.x.insert(p.x.end(), r.x.begin(), r.x.end());
        p.y.insert(p.y.end(), r.y.begin(), r.y.end());
      }
      groups.push_back(fit_group("all runs", p, frontier, bootstrap, seed));
    }
    const std::string records =
        pick == analysis::RunPick::kAll ? "every evaluation" : "each run's " + std::string(name_of(pick)) + " record";
    const std::string over = frontier == analysis::Frontier::kNone
                                 ? records
                                 : std::string("the Pareto frontier (") +
                                       (frontier == analysis::Frontier::kMax ? "highest" : "lowest") + " " + y +
                                       " so far along " + x + ") of " + records;
    md += "\n### " + y + " against " + x + "\n\n`" + y + " = a * " + x + "^b`, least squares in log-log space on " +
          over + " (step-0 records, made before any training compute, are left out); 95% intervals from " +
          std::to_string(bootstrap) + " bootstrap resamples of the fitted points (seed " + std::to_string(seed) +
          ").\n\n| group | points | fitted | a | b | b 95% | R² |\n|---|---|---|---|---|---|---|\n";
    nlohmann::json fj = {
        {"name", name}, {"y", y}, {"x", x}, {"frontier", name_of(frontier)}, {"groups", nlohmann::json::array()}};
    for (const GroupFit& g : groups) {
      md +=
          "| " + g.group + " | " + std::to_string(g.all.x.size()) + " | " + std::to_string(g.frontier.x.size()) + " | ";
      if (g.fitted)
        md += fmt(g.fit.a) + " | " + fmt(g.fit.b, "%.4f") + " | " +
              (g.bootstrapped ? "[" + fmt(g.boot.b.lo, "%.4f") + ", " + fmt(g.boot.b.hi, "%.4f") + "]" : "—") + " | " +
              fmt(g.fit.r2, "%.3f") + " |\n";
      else
        md += "— | — | — | — (" + g.note + ") |\n";
      if (!g.note.empty() && !g.fitted) notes.push_back("fit " + name + ", " + g.group + ": not fitted: " + g.note);
      fj["groups"].push_back(group_json(g));
    }
    fits_json.push_back(fj);

    analysis::LogLogPlot plot(plan.value("study", std::string()) + ": " + y + " against " + x, axis_label(x), y);
    for (size_t k = 0; k < groups.size(); ++k) {
      const GroupFit& g = groups[k];
      if (g.all.x.empty()) continue;
      const bool pooled = g.group == "all runs";
      const std::string color = pooled ? "#333333" : kColors[k % 8];
      if (!pooled) {
        // Each run's own trajectory, thin, in its family's colour.
        for (size_t i = 0; i < rows.size(); ++i) {
          const auto& fl = plan["runs"][i]["families"];
          if (per_run[i].x.size() < 2 || std::find(fl.begin(), fl.end(), g.group) == fl.end()) continue;
          std::vector<size_t> order(per_run[i].x.size());
          for (size_t j = 0; j < order.size(); ++j) order[j] = j;
          std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return per_run[i].x[a] < per_run[i].x[b]; });
          std::vector<double> rx, ry;
          for (size_t j : order) rx.push_back(per_run[i].x[j]), ry.push_back(per_run[i].y[j]);
          plot.line(rx, ry, color, 0.7, "");
        }
        plot.points(g.all.x, g.all.y, color, 3, g.group);
        plot.points(g.frontier.x, g.frontier.y, color, 5.5, "");
      }
      if (g.fitted) {
        const double lo = *std::min_element(g.frontier.x.begin(), g.frontier.x.end());
        const double hi = *std::max_element(g.frontier.x.begin(), g.frontier.x.end());
        std::vector<double> lx, ly;
        for (int i = 0; i <= 40; ++i) {
          const double v = lo * std::pow(hi / lo, i / 40.0);
          lx.push_back(v);
          ly.push_back(g.fit.predict(v));
        }
        plot.line(lx, ly, color, pooled ? 1.5 : 2.5, g.group + " fit, b = " + fmt(g.fit.b, "%.3f"));
      }
    }
    plot.write((dir / "plots" / (name + ".svg")).string());
    if (options.png) plot.write((dir / "plots" / (name + ".png")).string());
    md += "\n![" + name + "](plots/" + name + ".svg)\n";
  }
  if (!notes.empty()) {
    md += "\n## Left out\n\n";
    for (const auto& n : notes) md += "- " + n + "\n";
  }
  write_file_atomic(
      dir / "report.json",
      nlohmann::json(
          {{"study", plan.value("study", std::string())}, {"runs", runs_json}, {"fits", fits_json}, {"notes", notes}})
              .dump(2) +
          "\n");
  write_file_atomic(dir / "report.md", md);
  return notes;
}

}  // namespace dtrainer::study
