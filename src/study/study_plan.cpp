#include "dtrainer/study/study_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <set>
#include <thread>

#include <toml++/toml.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/core/format_duration.h"
#include "dtrainer/core/memory_info.h"
#include "dtrainer/models/unet_spec.h"
#include "dtrainer/study/step_timing.h"
#include "dtrainer/train/data_plan.h"
#include "dtrainer/train/job_file.h"
#include "dtrainer/train/memory_plan.h"
#include "dtrainer/train/startup_plan.h"
#include "dtrainer/train/train_config.h"

namespace fs = std::filesystem;

namespace dtrainer::study {
namespace {

// What dtstudy itself sets in every run's job file.
const std::set<std::string>& study_keys() {
  static const std::set<std::string> k{"name", "run_dir", "resume", "dry_run", "config"};
  return k;
}

// The job keys dtrainer takes (every option of `dtrainer --help`).
const std::set<std::string>& job_keys() {
  static const std::set<std::string> keys = [] {
    std::set<std::string> k;
    for (const auto& item : train::parse_job_toml(train::train_config_toml(train::TrainConfig{}), "defaults"))
      k.insert(item.key);
    for (const char* list : {"model_set", "data_weights", "eval_data", "data", "eval_steps"}) k.insert(list);
    return k;
  }();
  return keys;
}

// The elements of a list value's TOML text, as the strings they hold.
std::vector<std::string> list_strings(const std::string& value, const std::string& where, const std::string& key) {
  toml::table t;
  try {
    t = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    throw Error(where, key + ": not a list");
  }
  std::vector<std::string> out;
  if (const auto* a = t["v"].as_array()) {
    for (const auto& e : *a) {
      if (!e.is_string()) throw Error(where, key + " holds strings \"field=value\"");
      out.push_back(e.as_string()->get());
    }
  } else if (const auto* s = t["v"].as_string()) {
    out.push_back(s->get());
  } else {
    throw Error(where, key + " wants a list of \"field=value\" strings");
  }
  return out;
}

// A scalar's text as a model_set value: strings unquoted, numbers as written.
std::string unquoted(const std::string& value) {
  if (value.size() >= 2 && value.front() == '"') {
    toml::table t = toml::parse("v = " + value);
    return std::string(t["v"].value_or(std::string()));
  }
  return value;
}

// A run's job file being put together: keys in first-set order, model_set merged by field.
class JobText {
 public:
  // base: a key of the base job file (dtstudy's own keys there are overridden, not refused).
  void set(const Setting& s, bool base = false) {
    if (s.key.rfind("model_set.", 0) == 0) {
      const std::string field = s.key.substr(10);
      if (field.empty()) throw Error(s.where, "model_set.FIELD needs a field (dtmodel describe lists them)");
      model_set(field, unquoted(s.value));
      return;
    }
    if (!job_keys().count(s.key))
      throw Error(s.where,
                  "unknown job key '" + s.key + "' (dtrainer --help lists them; model_set.FIELD sets a preset field)");
    if (study_keys().count(s.key)) {
      if (base) return;
      throw Error(s.where, "'" + s.key + "' is set by dtstudy for each run (runs/<study>/runs/<run>)");
    }
    if (s.key == "model_set") {
      for (const std::string& kv : list_strings(s.value, s.where, s.key)) {
        const size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) throw Error(s.where, "model_set entry '" + kv + "' is not field=value");
        model_set(kv.substr(0, eq), kv.substr(eq + 1));
      }
      return;
    }
    put(s.key, s.value);
  }
  void put(const std::string& key, const std::string& value) {
    for (auto& kv : items_)
      if (kv.first == key) {
        kv.second = value;
        return;
      }
    items_.emplace_back(key, value);
  }
  bool has(const std::string& key) const {
    return std::any_of(items_.begin(), items_.end(), [&](const auto& kv) { return kv.first == key; });
  }
  std::string text(const std::string& header) const {
    std::string out = header;
    for (const auto& [k, v] : items_) out += k + " = " + v + "\n";
    if (!model_set_.empty()) {
      out += "model_set = [";
      for (size_t i = 0; i < model_set_.size(); ++i)
        out += (i ? ", " : "") + train::toml_string(model_set_[i].first + "=" + model_set_[i].second);
      out += "]\n";
    }
    return out;
  }

 private:
  void model_set(const std::string& field, const std::string& value) {
    for (auto& kv : model_set_)
      if (kv.first == field) {
        kv.second = value;
        return;
      }
    model_set_.emplace_back(field, value);
  }
  std::vector<std::pair<std::string, std::string>> items_, model_set_;
};

std::string run_where(const Study& s, const std::string& run) { return s.file.string() + ": run '" + run + "'"; }

// The keys of the settings of [set] and one axis value (for "who set it" checks).
bool sets(const std::vector<Setting>& a, const std::vector<Setting>& b, const std::string& key, std::string* where) {
  for (const auto* v : {&a, &b})
    for (const Setting& s : *v)
      if (s.key == key) {
        *where = s.where;
        return true;
      }
  return false;
}

// `v` in the first of `units` (largest first) that it reaches, to 3 significant digits; below them
// all, as it is with `small` (a format) after it.
std::string scaled(double v, std::initializer_list<std::pair<double, const char*>> units, const char* small) {
  char buf[32];
  for (const auto& [size, suffix] : units)
    if (v >= size) {
      std::snprintf(buf, sizeof buf, "%.3g %s", v / size, suffix);
      return buf;
    }
  std::snprintf(buf, sizeof buf, small, v);
  return buf;
}
std::string gflops_text(double g) { return scaled(g, {{1e6, "PF"}, {1e3, "TF"}}, "%.3g GF"); }
std::string count_text(double n) { return scaled(n, {{1e9, "B"}, {1e6, "M"}, {1e3, "k"}}, "%.0f"); }

// What makes two runs the same run: the resolved configuration (its name and directory aside) and
// the resolved model (every UNet field; a transformer's overrides as given, sorted).
std::string run_identity(train::TrainConfig c, const models::BackboneSpec& spec) {
  c.name.clear();
  c.run_dir.clear();
  std::vector<std::string> overrides = c.model_set;
  c.model_set.clear();
  std::string id = train::train_config_toml(c);
  if (spec.family == "unet") {
    for (const auto& f : models::unet_fields()) id += f.key + "=" + models::get_unet_field(spec.unet, f.key) + "\n";
  } else {
    std::sort(overrides.begin(), overrides.end());
    for (const auto& o : overrides) id += o + "\n";
  }
  return id;
}

}  // namespace

std::vector<int64_t> geometric_eval_steps(int64_t steps, int64_t points, double ratio) {
  std::set<int64_t> out;
  double s = static_cast<double>(steps);
  for (int64_t k = 1; k < points; ++k) {
    s /= ratio;
    const int64_t v = std::llround(s);
    if (v >= 1 && v < steps) out.insert(v);
  }
  return {out.begin(), out.end()};
}

int64_t iso_compute_steps(double compute_gflops, int64_t global_batch, double gflops_per_sample, int64_t round_to) {
  const double per_step = static_cast<double>(global_batch) * gflops_per_sample;
  const double steps = compute_gflops / per_step;
  const int64_t rounded = std::llround(steps / static_cast<double>(round_to)) * round_to;
  return std::max(round_to, rounded);
}

StudyPlan plan_study(const Study& study, const PlanOptions& options) {
  StudyPlan plan;
  plan.study = study;
  const int cores =
      options.cores > 0 ? options.cores : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t threads = study.threads > 0 ? study.threads : std::max(1, cores / study.ranks_per_node);
  const HostMemory host = options.check_memory ? available_host_memory() : HostMemory{};
  std::map<std::string, StepTiming> timings;   // by model and batch split
  std::map<std::string, std::string> by_text;  // job text (without name) -> run that has it

  for (const Axis& axis : study.axes) {
    for (const AxisValue& value : axis.values) {
      const std::string name = axis.name + "-" + value.label;
      const std::string where = run_where(study, name);
      JobText job;
      for (const Setting& s : study.base) job.set(s, true);
      for (const Setting& s : study.set) job.set(s);
      for (const Setting& s : value.settings) job.set(s);
      std::string who;
      if (study.budget.rule == BudgetRule::kIsoCompute && sets(study.set, value.settings, "steps", &who))
        throw Error(who, "steps is chosen by budget.rule = \"iso-compute\"; remove it (or use rule = \"steps\")");
      if (study.budget.rule == BudgetRule::kSteps && study.budget.steps > 0 &&
          sets(study.set, value.settings, "steps", &who))
        throw Error(who, "steps is given by budget.steps too; give it in one place");
      if (study.eval.schedule != EvalSchedule::kBase)
        for (const char* k : {"eval_every", "align_every", "eval_steps"})
          if (sets(study.set, value.settings, k, &who))
            throw Error(who, std::string(k) + " is set by eval.schedule = \"" + name_of(study.eval.schedule) +
                                 "\"; remove it (or use schedule = \"base\")");
      if (study.budget.rule == BudgetRule::kSteps && study.budget.steps > 0)
        job.put("steps", std::to_string(study.budget.steps));

      // The configuration so far (steps not yet chosen under iso-compute): N and C per sample.
      auto read = [&](const JobText& j) {
        try {
          return train::read_job_text(j.text(""), where);
        } catch (const Error& e) {
          throw Error(where, e.detail());
        }
      };
      const fs::path run_dir = study.dir / "runs" / name;
      job.put("name", train::toml_string(study.name + "-" + name));
      job.put("run_dir", train::toml_string(run_dir.string()));
      train::TrainConfig c = read(job);
      train::DataPlan data;
      train::StartupPlan sp;
      auto make_plan = [&] {
        try {
          train::validate_train_config(c, study.ranks);
          data = train::plan_data(c, run_dir);
          sp = train::make_startup_plan(c, data, study.ranks);
        } catch (const Error& e) {
          throw Error(where, e.what());
        }
      };
      make_plan();
      if (study.budget.rule == BudgetRule::kIsoCompute) {
        const int64_t steps = iso_compute_steps(study.budget.compute_gflops, c.global_batch, sp.gflops_per_sample_s1,
                                                study.budget.round_to);
        job.put("steps", std::to_string(steps));
        c.steps = steps;  // (the schedule below needs it; the full read follows)
      }
      std::vector<int64_t> evals;
      if (study.eval.schedule == EvalSchedule::kGeometric) {
        evals = geometric_eval_steps(c.steps, study.eval.points, study.eval.ratio);
        job.put("eval_every", "0");
        if (c.align_every != 0) job.put("align_every", "-1");
        std::string list = "[";
        for (size_t i = 0; i < evals.size(); ++i) list += (i ? ", " : "") + std::to_string(evals[i]);
        job.put("eval_steps", list + "]");
      } else if (study.eval.schedule == EvalSchedule::kEvery) {
        job.put("eval_every", std::to_string(study.eval.every));
        if (c.align_every != 0) job.put("align_every", std::to_string(study.eval.every));
      }
      if (study.threads > 0) job.put("threads", std::to_string(study.threads));
      c = read(job);
      make_plan();

      // One run per distinct job: a value that is the base of another axis is that run.
      const std::string key = run_identity(c, sp.backbone);
      if (const auto it = by_text.find(key); it != by_text.end()) {
        for (PlannedRun& r : plan.runs)
          if (r.name == it->second && std::find(r.families.begin(), r.families.end(), axis.name) == r.families.end())
            r.families.push_back(axis.name);
        continue;
      }
      by_text[key] = name;
      for (const PlannedRun& r : plan.runs)
        if (r.name == name) throw Error(where, "two runs are named '" + name + "' (give the axis labels = [...])");

      PlannedRun r;
      r.name = name;
      r.families = {axis.name};
      r.run_dir = run_dir;
      r.job_toml = job.text("# dtstudy: run '" + name + "' of study '" + study.name + "' (" + study.file.string() +
                            "); dtrainer --config reads it\n");
      r.model = models::backbone_summary(sp.backbone);
      r.params = sp.cost.params;
      r.steps = c.steps;
      r.global_batch = c.global_batch;
      r.gflops_per_sample = sp.gflops_per_sample_s1;
      r.compute_gflops = static_cast<double>(r.steps) * static_cast<double>(r.global_batch) * r.gflops_per_sample;
      const train::MemoryEstimate mem = train::estimate_memory(c, sp.cost, sp.world, sp.micro);
      r.memory_per_rank = mem.total();
      if (options.check_memory && host.available_bytes > 0) {
        try {
          train::check_memory_fits(c, mem, std::min(study.ranks, study.ranks_per_node),
                                   static_cast<double>(host.available_bytes),
                                   "the memory available on this node (" + host.source + ")");
        } catch (const Error& e) {
          throw Error(where, e.what());
        }
      }
      r.eval_steps = evals;
      // Alignment evaluations: step 0, the schedule's, the last.
      const bool align = c.align_every != 0 && data.shapes_world;
      if (align) {
        std::set<int64_t> at{0, c.steps};
        for (int64_t s : evals) at.insert(s);
        const int64_t every = c.align_every > 0 ? c.align_every : c.eval_every;
        if (every > 0)
          for (int64_t s = every; s < c.steps; s += every) at.insert(s);
        r.evaluations = static_cast<int64_t>(at.size());
      }
      if (options.measure) {
        const std::string tkey = r.model + "|" + std::to_string(sp.micro) + "|" + std::to_string(sp.accumulation);
        auto it = timings.find(tkey);
        if (it == timings.end()) {
          try {
            it = timings.emplace(tkey, time_training_step(sp.backbone, sp.micro, sp.accumulation, threads)).first;
          } catch (const Error& e) {
            it = timings.end();
          }
        }
        if (it != timings.end()) {
          r.step_seconds = it->second.step_seconds;
          const double per_rank_prompts = std::ceil(static_cast<double>(c.align_prompts) / study.ranks);
          const double guided = c.guidance_scale != 1.0 ? 2.0 : 1.0;
          const double eval_s = static_cast<double>(r.evaluations) * per_rank_prompts *
                                static_cast<double>(c.sample_steps) * guided * it->second.forward_seconds_per_image;
          r.est_seconds = static_cast<double>(r.steps) * r.step_seconds + eval_s;
        }
      }
      plan.runs.push_back(std::move(r));
    }
  }
  plan.total_seconds = 0;
  for (const PlannedRun& r : plan.runs) {
    plan.total_compute_gflops += r.compute_gflops;
    if (r.est_seconds < 0) plan.total_seconds = -1;
    if (plan.total_seconds >= 0) plan.total_seconds += r.est_seconds;
  }
  return plan;
}

std::string describe_study_plan(const StudyPlan& plan) {
  const Study& s = plan.study;
  std::string out = "study " + s.name + " (" + s.file.string() + "): " + std::to_string(plan.runs.size()) +
                    " runs on " + std::to_string(s.ranks) + " rank" + (s.ranks > 1 ? "s" : "") + ", budget " +
                    name_of(s.budget.rule);
  if (s.budget.rule == BudgetRule::kIsoCompute) out += " (C = " + gflops_text(s.budget.compute_gflops) + " per run)";
  out += ", evaluation " + std::string(name_of(s.eval.schedule)) + "; directory " + s.dir.string() + "\n\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-22s %-18s %9s %10s %7s %9s %10s %9s  %s\n", "run", "families", "N", "GF/sample",
                "steps", "C", "mem/rank", "est.", "evaluations at");
  out += line;
  for (const PlannedRun& r : plan.runs) {
    std::string fam;
    for (const auto& f : r.families) fam += (fam.empty() ? "" : ",") + f;
    std::string evals = "0";
    for (int64_t e : r.eval_steps) evals += " " + std::to_string(e);
    evals += " " + std::to_string(r.steps);
    std::snprintf(line, sizeof line, "%-22s %-18s %9s %10.4g %7lld %9s %10s %9s  %s\n", r.name.c_str(), fam.c_str(),
                  count_text(static_cast<double>(r.params)).c_str(), r.gflops_per_sample,
                  static_cast<long long>(r.steps), gflops_text(r.compute_gflops).c_str(),
                  format_bytes(r.memory_per_rank).c_str(),
                  r.est_seconds < 0 ? "-" : format_duration(r.est_seconds).c_str(), evals.c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "%-22s %-18s %9s %10s %7s %9s %10s %9s\n", "total", "", "", "", "",
                gflops_text(plan.total_compute_gflops).c_str(), "",
                plan.total_seconds < 0 ? "-" : format_duration(plan.total_seconds).c_str());
  out += line;
  out +=
      "\nN: parameters; GF/sample and C: [S1]'s compute, 6 x linear/conv MACs per sample (GFLOPs), C = steps x "
      "global batch x GF/sample; mem/rank: the dry run's estimate; est.: a measured training step x steps, plus "
      "the alignment evaluations (one process on this machine, a rank's share of its cores)\n";
  return out;
}

nlohmann::json study_plan_json(const StudyPlan& plan) {
  nlohmann::json runs = nlohmann::json::array();
  for (const PlannedRun& r : plan.runs)
    runs.push_back({{"name", r.name},
                    {"families", r.families},
                    {"run_dir", r.run_dir.string()},
                    {"model", r.model},
                    {"params", r.params},
                    {"steps", r.steps},
                    {"global_batch", r.global_batch},
                    {"gflops_per_sample", r.gflops_per_sample},
                    {"compute_gflops", r.compute_gflops},
                    {"memory_per_rank_bytes", r.memory_per_rank},
                    {"eval_steps", r.eval_steps},
                    {"alignment_evaluations", r.evaluations},
                    {"step_seconds", r.step_seconds < 0 ? nlohmann::json() : nlohmann::json(r.step_seconds)},
                    {"est_seconds", r.est_seconds < 0 ? nlohmann::json() : nlohmann::json(r.est_seconds)}});
  nlohmann::json families = nlohmann::json::array(), fits = nlohmann::json::array();
  for (const Axis& a : plan.study.axes) families.push_back(a.name);
  for (const FitSpec& f : plan.study.fits)
    fits.push_back({{"name", f.name},
                    {"y", f.y},
                    {"x", name_of(f.x)},
                    {"frontier", name_of(f.frontier)},
                    {"pick", name_of(f.pick)}});
  return {{"study", plan.study.name},
          {"families", families},
          {"fits", fits},
          {"bootstrap", plan.study.bootstrap},
          {"seed", plan.study.seed},
          {"file", plan.study.file.string()},
          {"dir", plan.study.dir.string()},
          {"ranks", plan.study.ranks},
          {"budget", name_of(plan.study.budget.rule)},
          {"runs", runs},
          {"total_compute_gflops", plan.total_compute_gflops},
          {"total_est_seconds", plan.total_seconds < 0 ? nlohmann::json() : nlohmann::json(plan.total_seconds)}};
}

}  // namespace dtrainer::study
