#include "dtrainer/study/study_file.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <set>

#include <toml++/toml.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/train/job_file.h"

namespace fs = std::filesystem;

namespace dtrainer::study {

const NameTable<BudgetRule>& name_table(BudgetRule) {
  static const NameTable<BudgetRule> t{{"steps", BudgetRule::kSteps}, {"iso-compute", BudgetRule::kIsoCompute}};
  return t;
}
const NameTable<EvalSchedule>& name_table(EvalSchedule) {
  static const NameTable<EvalSchedule> t{
      {"base", EvalSchedule::kBase}, {"every", EvalSchedule::kEvery}, {"geometric", EvalSchedule::kGeometric}};
  return t;
}
const NameTable<FitAxis>& name_table(FitAxis) {
  static const NameTable<FitAxis> t{{"C", FitAxis::kC}, {"N", FitAxis::kN}, {"D", FitAxis::kD}};
  return t;
}

namespace {

// Reads one table's keys, each at most once, and refuses the keys nobody read.
class Fields {
 public:
  Fields(const toml::table& t, std::string source, std::string section)
      : t_(t), source_(std::move(source)), section_(std::move(section)) {}

  std::string at(const toml::node& n) const {
    return source_ + ":" + std::to_string(n.source().begin.line) + ":" + std::to_string(n.source().begin.column);
  }
  std::string at() const {
    return source_ + ":" + std::to_string(t_.source().begin.line) + ":" + std::to_string(t_.source().begin.column);
  }
  const toml::node* get(const std::string& key) {
    used_.insert(key);
    return t_.get(key);
  }
  std::string name(const std::string& key) const { return section_.empty() ? key : section_ + "." + key; }

  std::string text(const std::string& key, std::string fallback) {
    const toml::node* n = get(key);
    if (!n) return fallback;
    if (!n->is_string()) throw Error(at(*n), name(key) + " wants a string");
    return n->as_string()->get();
  }
  int64_t integer(const std::string& key, int64_t fallback, int64_t lo) {
    const toml::node* n = get(key);
    if (!n) return fallback;
    if (!n->is_integer()) throw Error(at(*n), name(key) + " wants an integer");
    const int64_t v = n->as_integer()->get();
    if (v < lo)
      throw Error(at(*n), name(key) + " must be at least " + std::to_string(lo) + ", got " + std::to_string(v));
    return v;
  }
  double number(const std::string& key, double fallback, double above) {
    const toml::node* n = get(key);
    if (!n) return fallback;
    double v = 0;
    if (n->is_integer())
      v = static_cast<double>(n->as_integer()->get());
    else if (n->is_floating_point())
      v = n->as_floating_point()->get();
    else
      throw Error(at(*n), name(key) + " wants a number");
    if (!std::isfinite(v) || !(v > above))
      throw Error(at(*n), name(key) + " must be a finite number above " + std::to_string(above));
    return v;
  }
  template <typename E>
  E choice(const std::string& key, E fallback) {
    const toml::node* n = get(key);
    if (!n) return fallback;
    if (!n->is_string()) throw Error(at(*n), name(key) + " wants one of " + name_table(E{}).joined(", "));
    return name_table(E{}).parse(at(*n) + ": " + name(key), n->as_string()->get());
  }
  // Every key of the table was read: an unknown one is a typo.
  void done(const std::string& known) const {
    for (const auto& [k, n] : t_)
      if (!used_.count(std::string(k.str())))
        throw Error(at(n), "unknown key '" + name(std::string(k.str())) + "' (" + known + ")");
  }

 private:
  const toml::table& t_;
  std::string source_, section_;
  std::set<std::string> used_;
};

// A TOML value as the text a job file holds (strings quoted, numbers in full precision).
std::string value_text(const toml::node& n, const std::string& where) {
  if (const auto* s = n.as_string()) return train::toml_string(s->get());
  if (const auto* i = n.as_integer()) return std::to_string(i->get());
  if (const auto* b = n.as_boolean()) return b->get() ? "true" : "false";
  if (const auto* f = n.as_floating_point()) {
    if (!std::isfinite(f->get())) throw Error(where, "a value must be finite");
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", f->get());
    std::string out = buf;
    if (out.find_first_of(".eE") == std::string::npos) out += ".0";
    return out;
  }
  if (const auto* a = n.as_array()) {
    std::string out = "[";
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::node& e = *a->get(i);
      if (e.is_array() || e.is_table()) throw Error(where, "a list value holds a list or table: job keys are flat");
      out += (i ? ", " : "") + value_text(e, where);
    }
    return out + "]";
  }
  throw Error(where, "a table, date or time is not a job value");
}

// The label a value gives its run's name: the value's text with anything but letters, digits,
// '.' and '-' turned into '_' ("0,2" -> "0_2").
std::string label_of(const toml::node& n) {
  std::string raw;
  if (const auto* s = n.as_string())
    raw = s->get();
  else if (const auto* a = n.as_array()) {
    for (const auto& e : *a) raw += (raw.empty() ? "" : "_") + label_of(e);
  } else
    raw = value_text(n, "");
  std::string out;
  for (char c : raw) out += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ? c : '_';
  return out;
}

bool valid_name(const std::string& s) {
  if (s.empty() || s == "." || s == "..") return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

const toml::table& table_at(Fields& f, const std::string& key, const toml::table& empty) {
  const toml::node* n = f.get(key);
  if (!n) return empty;
  if (!n->is_table()) throw Error(f.at(*n), "[" + key + "] must be a table");
  return *n->as_table();
}

// A flat job file's keys (sections and nested lists are refused where they are).
std::vector<Setting> read_job_settings(const fs::path& path) {
  const std::string source = path.string();
  toml::table t;
  try {
    t = toml::parse(read_file(path), source);
  } catch (const toml::parse_error& e) {
    throw Error(source + ":" + std::to_string(e.source().begin.line) + ":" + std::to_string(e.source().begin.column),
                "not valid TOML: " + std::string(e.description()));
  }
  Fields f(t, source, "");
  std::vector<Setting> out;
  for (const auto& [k, n] : t) {
    if (n.is_table()) throw Error(f.at(n), "[" + std::string(k.str()) + "]: a job file has flat keys, no sections");
    out.push_back({std::string(k.str()), value_text(n, f.at(n)), f.at(n)});
  }
  auto line_col = [](const Setting& a) {
    const size_t c2 = a.where.rfind(':'), c1 = a.where.rfind(':', c2 - 1);
    return std::make_pair(std::stol(a.where.substr(c1 + 1, c2 - c1 - 1)), std::stol(a.where.substr(c2 + 1)));
  };
  std::stable_sort(out.begin(), out.end(),
                   [&](const Setting& a, const Setting& b) { return line_col(a) < line_col(b); });
  return out;
}

}  // namespace

Study parse_study(const std::string& text, const fs::path& path) {
  const std::string source = path.string();
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw Error(source + ":" + std::to_string(e.source().begin.line) + ":" + std::to_string(e.source().begin.column),
                "not valid TOML: " + std::string(e.description()));
  }
  Study s;
  s.file = path;
  s.text = text;
  Fields f(root, source, "");
  s.name = f.text("name", path.stem().string());
  if (!valid_name(s.name))
    throw Error(source, "name '" + s.name + "' must be letters, digits, '-', '_' or '.' (it names the directory)");
  const std::string job = f.text("job", "");
  if (!job.empty()) {
    s.job = fs::path(job).is_absolute() ? fs::path(job) : path.parent_path() / job;
    std::error_code ec;
    if (!fs::is_regular_file(s.job, ec))
      throw Error(f.at(*root.get("job")), "job: no such job file " + s.job.string() + " (relative to the study file)");
  }
  if (!s.job.empty()) s.base = read_job_settings(s.job);
  s.dir = f.text("dir", (fs::path("runs") / ("study-" + s.name)).string());
  s.ranks = static_cast<int>(f.integer("ranks", 2, 1));
  s.ranks_per_node = static_cast<int>(f.integer("ranks_per_node", 0, 0));
  if (s.ranks_per_node == 0) s.ranks_per_node = s.ranks;
  s.threads = static_cast<int>(f.integer("threads", 0, 0));

  const toml::table empty;
  {
    const toml::table& set = table_at(f, "set", empty);
    for (const auto& [k, n] : set) {
      Fields where(set, source, "set");
      s.set.push_back({std::string(k.str()), value_text(n, where.at(n)), where.at(n)});
    }
  }
  {
    Fields b(table_at(f, "budget", empty), source, "budget");
    s.budget.rule = b.choice("rule", BudgetRule::kSteps);
    if (s.budget.rule == BudgetRule::kSteps) {
      s.budget.steps = b.integer("steps", 0, 1);
    } else {
      s.budget.compute_gflops = b.number("compute_gflops", 0, 0);
      if (s.budget.compute_gflops <= 0)
        throw Error(b.at(), "budget.rule = \"iso-compute\" needs compute_gflops (C per run, in GFLOPs)");
    }
    s.budget.round_to = b.integer("round_to", 10, 1);
    b.done("budget keys: rule, steps, compute_gflops, round_to");
  }
  {
    Fields e(table_at(f, "eval", empty), source, "eval");
    s.eval.schedule = e.choice("schedule", EvalSchedule::kBase);
    s.eval.every = e.integer("every", 0, 1);
    s.eval.points = e.integer("points", 5, 2);
    s.eval.ratio = e.number("ratio", 2.0, 1.0);
    if (s.eval.schedule == EvalSchedule::kEvery && s.eval.every == 0)
      throw Error(e.at(), "eval.schedule = \"every\" needs eval.every (steps between evaluations)");
    e.done("eval keys: schedule, every, points, ratio");
  }
  {
    const toml::node* axes = f.get("axis");
    if (!axes) throw Error(source, "no [[axis]]: a study varies at least one thing (docs/STUDY.md)");
    if (!axes->is_array_of_tables()) throw Error(f.at(*axes), "axis must be an array of tables: [[axis]]");
    std::set<std::string> names;
    for (const auto& node : *axes->as_array()) {
      const toml::table& t = *node.as_table();
      Fields a(t, source, "axis");
      Axis axis;
      axis.where = a.at();
      axis.name = a.text("name", "");
      if (!valid_name(axis.name))
        throw Error(axis.where, "axis.name '" + axis.name + "' must be letters, digits, '-', '_' or '.'");
      if (!names.insert(axis.name).second) throw Error(axis.where, "a second axis named '" + axis.name + "'");
      const std::string key = a.text("key", "");
      const toml::node* values = a.get("values");
      if (!values || !values->is_array())
        throw Error(axis.where, "axis '" + axis.name + "' needs values = [...] (one run per value)");
      const toml::array& vs = *values->as_array();
      if (vs.empty()) throw Error(a.at(*values), "axis '" + axis.name + "' has no values: an empty axis makes no runs");
      std::vector<std::string> labels;
      if (const toml::node* l = a.get("labels")) {
        if (!l->is_array() || l->as_array()->size() != vs.size())
          throw Error(a.at(*l), "axis '" + axis.name + "': labels must be a list of one string per value");
        for (const auto& e : *l->as_array()) {
          if (!e.is_string() || !valid_name(e.as_string()->get()))
            throw Error(a.at(e), "axis '" + axis.name + "': a label must be letters, digits, '-', '_' or '.'");
          labels.push_back(e.as_string()->get());
        }
      }
      std::set<std::string> seen;
      for (size_t i = 0; i < vs.size(); ++i) {
        const toml::node& v = *vs.get(i);
        const std::string where = a.at(v);
        AxisValue av;
        if (const auto* tv = v.as_table()) {
          if (tv->empty()) throw Error(where, "axis '" + axis.name + "': an empty table sets nothing");
          std::string label;
          for (const auto& [k, n] : *tv) {
            av.settings.push_back({std::string(k.str()), value_text(n, where), where});
            label += (label.empty() ? "" : "_") + label_of(n);
          }
          av.label = label;
        } else {
          if (key.empty())
            throw Error(axis.where, "axis '" + axis.name + "' needs key = \"...\" (or values that are tables of keys)");
          av.settings.push_back({key, value_text(v, where), where});
          av.label = label_of(v);
        }
        if (!labels.empty()) av.label = labels[i];
        if (!seen.insert(av.label).second)
          throw Error(where,
                      "axis '" + axis.name + "' has two values labelled '" + av.label + "' (give labels = [...])");
        axis.values.push_back(std::move(av));
      }
      a.done("axis keys: name, key, values, labels");
      s.axes.push_back(std::move(axis));
    }
  }
  if (const toml::node* fits = f.get("fit")) {
    if (!fits->is_array_of_tables()) throw Error(f.at(*fits), "fit must be an array of tables: [[fit]]");
    std::set<std::string> names;
    for (const auto& node : *fits->as_array()) {
      Fields g(*node.as_table(), source, "fit");
      FitSpec fit;
      fit.where = g.at();
      fit.y = g.text("y", "alignment");
      fit.x = g.choice("x", FitAxis::kC);
      fit.frontier = g.choice("frontier", fit.y == "alignment" ? analysis::Frontier::kMax : analysis::Frontier::kMin);
      fit.pick = g.choice("pick", analysis::RunPick::kAll);
      if (fit.pick == analysis::RunPick::kStep) throw Error(fit.where, "fit.pick = \"step\" is not offered here");
      fit.name = g.text("name", fit.y + "-vs-" + name_of(fit.x));
      if (!valid_name(fit.name))
        throw Error(fit.where, "fit.name '" + fit.name + "' must be letters, digits, '-', '_'");
      if (!names.insert(fit.name).second) throw Error(fit.where, "a second fit named '" + fit.name + "'");
      g.done("fit keys: name, y, x, frontier, pick");
      s.fits.push_back(std::move(fit));
    }
  }
  {
    Fields r(table_at(f, "report", empty), source, "report");
    s.bootstrap = r.integer("bootstrap", 200, 0);
    s.seed = static_cast<uint64_t>(r.integer("seed", 1, 0));
    r.done("report keys: bootstrap, seed");
  }
  f.done(
      "study keys: name, job, dir, ranks, ranks_per_node, threads, [set], [budget], [eval], [[axis]], [[fit]], "
      "[report]");
  return s;
}

Study read_study(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(path.string(), "no such study file");
  return parse_study(read_file(path), path);
}

}  // namespace dtrainer::study
