#include "dtrainer/train/job_file.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <toml++/toml.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"

namespace dtrainer::train {
namespace {

std::string at(const std::string& source, const toml::source_region& r) {
  return source + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
}

// A scalar as the option parsers read it: strings as they are, numbers in full precision.
std::string scalar_text(const toml::node& n, const std::string& key, const std::string& where) {
  if (const auto* s = n.as_string()) return s->get();
  if (const auto* i = n.as_integer()) return std::to_string(i->get());
  if (const auto* b = n.as_boolean()) return b->get() ? "true" : "false";
  if (const auto* f = n.as_floating_point()) {
    const double v = f->get();
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
  }
  if (n.is_table()) throw Error(where, "key '" + key + "' holds a table: sections are not supported, write flat keys");
  if (n.is_array()) throw Error(where, "key '" + key + "' holds a nested array: lists are flat (\"a\", \"b\")");
  throw Error(where, "key '" + key + "' holds a date or time, which no option takes");
}

}  // namespace

std::vector<JobItem> parse_job_toml(const std::string& text, const std::string& source) {
  toml::table table;
  try {
    table = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw Error(at(source, e.source()), "not valid TOML: " + std::string(e.description()));
  }
  std::vector<JobItem> items;
  for (const auto& [k, node] : table) {
    JobItem item;
    item.key = std::string(k.str());
    item.line = node.source().begin.line;
    item.column = node.source().begin.column;
    const std::string where = at(source, node.source());
    if (node.is_table())
      throw Error(where,
                  "[" + item.key + "]: sections are not supported: write flat keys (dtrainer --help lists them)");
    if (const auto* arr = node.as_array()) {
      item.kind = "array";
      for (const auto& e : *arr) item.values.push_back(scalar_text(e, item.key, at(source, e.source())));
    } else {
      item.values.push_back(scalar_text(node, item.key, where));
      item.kind = node.is_string()           ? "string"
                  : node.is_integer()        ? "integer"
                  : node.is_floating_point() ? "float"
                                             : "boolean";
    }
    items.push_back(std::move(item));
  }
  // (toml++ keeps keys sorted: back to the file's order, so the first error is the first in the file)
  std::sort(items.begin(), items.end(), [](const JobItem& a, const JobItem& b) {
    return a.line < b.line || (a.line == b.line && a.column < b.column);
  });
  return items;
}

std::string toml_string(const std::string& v) {
  std::string out = "\"";
  for (char ch : v) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

std::vector<JobItem> read_job_file(const std::string& path) { return parse_job_toml(read_file(path), path); }

}  // namespace dtrainer::train
