#include "dtrainer/study/study_status.h"

#include <cstdio>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/format_duration.h"
#include "dtrainer/study/study_runner.h"

namespace fs = std::filesystem;

namespace dtrainer::study {

RunProgress read_run_progress(const fs::path& run_dir) {
  RunProgress p;
  std::ifstream in(run_dir / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json r = nlohmann::json::parse(line, nullptr, false);
    if (!r.is_object() || !r.contains("step") || !r["step"].is_number()) continue;  // (a torn last line)
    p.step = std::max(p.step, r["step"].get<int64_t>());
    if (r.contains("loss") && r["loss"].is_number()) p.loss = r["loss"].get<double>();
    if (r.contains("eval_loss") && r["eval_loss"].is_number()) p.eval_loss = r["eval_loss"].get<double>();
    if (r.contains("alignment") && r["alignment"].is_number()) p.alignment = r["alignment"].get<double>();
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir / "ckpt", ec)) {
    const std::string n = e.path().filename().string();
    long long s = 0;
    if (n.rfind("step_", 0) == 0 && std::sscanf(n.c_str() + 5, "%lld", &s) == 1 &&
        fs::exists(e.path() / "COMPLETE", ec))
      p.checkpoint_step = std::max<int64_t>(p.checkpoint_step, s);
  }
  return p;
}

std::string describe_progress(const RunProgress& p) {
  std::string out;
  char buf[64];
  if (p.loss) std::snprintf(buf, sizeof buf, ", loss %.4g", *p.loss), out += buf;
  if (p.eval_loss) std::snprintf(buf, sizeof buf, ", held-out %.4g", *p.eval_loss), out += buf;
  if (p.alignment) std::snprintf(buf, sizeof buf, ", alignment %.3f", *p.alignment), out += buf;
  return out;
}

std::string describe_study_status(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir / "plan.json", ec))
    throw Error(dir.string(), "not a study directory (no plan.json: `dtstudy run STUDY.toml` makes one)");
  const nlohmann::json plan = nlohmann::json::parse(read_file(dir / "plan.json"), nullptr, false);
  if (!plan.is_object() || !plan.contains("runs")) throw Error((dir / "plan.json").string(), "not a study plan");
  // The last launch of each run (its exit and state), and the wall time of all its launches.
  std::map<std::string, nlohmann::json> last;
  std::map<std::string, double> wall;
  {
    std::ifstream in(dir / "launches.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json r = nlohmann::json::parse(line, nullptr, false);
      if (!r.is_object() || !r.contains("run")) continue;
      last[r["run"].get<std::string>()] = r;
      wall[r["run"].get<std::string>()] += r.value("wall_s", 0.0);
    }
  }
  std::string out = "study " + plan.value("study", std::string("?")) + " (" + dir.string() + ")\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-22s %-12s %13s %10s %10s %9s %8s %10s\n", "run", "state", "steps", "loss",
                "held-out", "alignment", "ckpt", "wall");
  out += line;
  int complete = 0, failed = 0;
  for (const auto& r : plan["runs"]) {
    const std::string name = r["name"].get<std::string>();
    const int64_t steps = r["steps"].get<int64_t>();
    const fs::path run_dir = r["run_dir"].get<std::string>();
    const RunStatus st = run_status(run_dir, steps);
    const RunProgress p = read_run_progress(run_dir);
    std::string state = st == RunStatus::kComplete    ? "complete"
                        : st == RunStatus::kPreempted ? "preempted"
                        : st == RunStatus::kPartial   ? "partial"
                                                      : "not started";
    if (st != RunStatus::kComplete && last.count(name) && last[name].value("state", "") == "failed")
      state = "FAILED (" + std::to_string(last[name].value("exit", 0)) + ")";
    complete += st == RunStatus::kComplete;
    failed += state.rfind("FAILED", 0) == 0;
    auto num = [](const std::optional<double>& v, const char* fmt) {
      if (!v) return std::string("-");
      char b[32];
      std::snprintf(b, sizeof b, fmt, *v);
      return std::string(b);
    };
    std::snprintf(line, sizeof line, "%-22s %-12s %6lld/%-6lld %10s %10s %9s %8s %10s\n", name.c_str(), state.c_str(),
                  static_cast<long long>(p.step), static_cast<long long>(steps), num(p.loss, "%.4g").c_str(),
                  num(p.eval_loss, "%.4g").c_str(), num(p.alignment, "%.3f").c_str(),
                  p.checkpoint_step < 0 ? "-" : std::to_string(p.checkpoint_step).c_str(),
                  wall.count(name) ? format_duration(wall[name]).c_str() : "-");
    out += line;
  }
  out += std::to_string(complete) + " of " + std::to_string(plan["runs"].size()) + " runs complete";
  if (failed) out += ", " + std::to_string(failed) + " failed (logs in " + (dir / "logs").string() + ")";
  if (fs::exists(dir / "slurm.json", ec)) {
    const nlohmann::json s = nlohmann::json::parse(read_file(dir / "slurm.json"), nullptr, false);
    if (s.is_object())
      out += "; Slurm array job " + s.value("array_job", std::string("-")) + ", report job " +
             s.value("report_job", std::string("-"));
  }
  return out + "\n";
}

}  // namespace dtrainer::study
