#include "dtrainer/analysis/table.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/core/metric_keys.h"

namespace dtrainer::analysis {

const NameTable<RunPick>& name_table(RunPick) {
  static const NameTable<RunPick> t{{"final", RunPick::kFinal},
                                    {"best", RunPick::kBest},
                                    {"highest", RunPick::kHighest},
                                    {"step", RunPick::kStep},
                                    {"all", RunPick::kAll}};
  return t;
}

bool Table::has(const std::string& column) const {
  for (const auto& c : columns)
    if (c == column) return true;
  return false;
}

std::vector<double> Table::numeric(const std::string& column) const {
  size_t idx = columns.size();
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == column) idx = i;
  if (idx == columns.size()) {
    std::string known;
    for (const auto& c : columns) known += (known.empty() ? "" : ", ") + c;
    throw Error(source, "no column '" + column + "' (columns: " + known + ")");
  }
  std::vector<double> out;
  for (size_t r = 0; r < rows.size(); ++r) {
    const std::string& cell = idx < rows[r].size() ? rows[r][idx] : std::string();
    char* end = nullptr;
    const double v = std::strtod(cell.c_str(), &end);
    if (cell.empty() || end != cell.c_str() + cell.size() || !std::isfinite(v))
      throw Error(source + ": row " + std::to_string(r + 1) + ", column " + column,
                  "expected a finite number, got '" + cell + "'");
    out.push_back(v);
  }
  return out;
}

static std::vector<std::string> split_csv_line(const std::string& line, const std::string& where) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"')
        cur += '"', ++i;
      else if (c == '"')
        quoted = false;
      else
        cur += c;
    } else if (c == '"')
      quoted = true;
    else if (c == ',')
      out.push_back(cur), cur.clear();
    else if (c != '\r')
      cur += c;
  }
  if (quoted) throw Error(where, "unterminated quoted field");
  out.push_back(cur);
  return out;
}

Table read_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot open (missing file?)");
  Table t;
  t.source = path;
  std::string line;
  if (!std::getline(in, line)) throw Error(path, "empty file (no header row)");
  t.columns = split_csv_line(line, path + ": header");
  for (size_t r = 1; std::getline(in, line); ++r) {
    if (line.empty() || line == "\r") continue;
    auto cells = split_csv_line(line, path + ": row " + std::to_string(r));
    if (cells.size() != t.columns.size())
      throw Error(path + ": row " + std::to_string(t.rows.size() + 1),
                  std::to_string(cells.size()) + " fields, the header has " + std::to_string(t.columns.size()));
    t.rows.push_back(std::move(cells));
  }
  return t;
}

Table read_runs(const std::vector<std::string>& dirs, const std::string& metric, RunPick pick, long long step) {
  Table t;
  t.source = "runs";
  t.columns = {"run", "N", "C", "D", "step", metric};
  for (const auto& dir : dirs) {
    const std::string path = (std::filesystem::path(dir) / "metrics.jsonl").string();
    std::ifstream in(path);
    if (!in) throw Error(path, "cannot open (is " + dir + " a dtrainer run directory?)");
    nlohmann::json chosen;
    std::vector<nlohmann::json> all;
    std::string line;
    int64_t untrained = 0;
    double best = std::numeric_limits<double>::infinity(), highest = -std::numeric_limits<double>::infinity();
    for (size_t n = 1; std::getline(in, line); ++n) {
      if (line.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw Error(path + ": line " + std::to_string(n), std::string("not JSON: ") + e.what());
      }
      if (!j.contains(metric) || !j[metric].is_number()) continue;
      const double v = j[metric].get<double>();
      if (pick == RunPick::kAll) {
        const char* C = metric_keys::kComputeGflops;
        if (j.contains(C) && j[C].is_number() && j[C].get<double>() <= 0) {
          ++untrained;
          chosen = j;
          continue;
        }
        all.push_back(j);
      }
      if (pick == RunPick::kFinal || pick == RunPick::kAll || (pick == RunPick::kBest && v < best) ||
          (pick == RunPick::kHighest && v > highest) ||
          (pick == RunPick::kStep && j.value(metric_keys::kStep, -1LL) == step)) {
        chosen = j;
        best = std::min(best, v);
        highest = std::max(highest, v);
      }
    }
    if (chosen.is_null())
      throw Error(
          path, "no record with '" + metric + "'" + (pick == RunPick::kStep ? " at step " + std::to_string(step) : ""));
    if (pick != RunPick::kAll) all = {chosen};
    if (untrained > 0)
      t.notes.push_back(
          path + ": " + std::to_string(untrained) + " record(s) of '" + metric +
          "' before any training compute (compute_gflops 0, step 0) left out: a log axis has no place for them");
    if (all.empty()) throw Error(path, "no record with '" + metric + "' after training began (only step-0 records)");
    for (const auto& record : all) {
      auto num = [&](const char* key) {
        if (!record.contains(key) || !record[key].is_number())
          throw Error(path, std::string("record lacks numeric '") + key + "'");
        return nlohmann::json(record[key]).dump();
      };
      t.rows.push_back({dir, num(metric_keys::kParams), num(metric_keys::kComputeGflops),
                        num(metric_keys::kImageNounPairs), num(metric_keys::kStep), num(metric.c_str())});
    }
  }
  return t;
}

}  // namespace dtrainer::analysis
