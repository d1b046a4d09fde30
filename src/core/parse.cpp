#include "dtrainer/core/parse.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "dtrainer/core/error.h"

namespace dtrainer {
namespace {

std::string trim(const std::string& s) {
  auto b = std::find_if_not(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
  auto e = std::find_if_not(s.rbegin(), s.rend(), [](unsigned char c) { return std::isspace(c); }).base();
  return b < e ? std::string(b, e) : std::string();
}

}  // namespace

int64_t parse_int(const std::string& field, const std::string& text) {
  const std::string t = trim(text);
  if (t.empty()) throw Error(field, "expected an integer, got an empty value");
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (errno == ERANGE) throw Error(field, "integer '" + t + "' is out of range");
  if (end != t.c_str() + t.size()) throw Error(field, "expected an integer, got '" + t + "'");
  return v;
}

bool parse_bool(const std::string& field, const std::string& text) {
  std::string t = trim(text);
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "0" || t == "no" || t == "off") return false;
  throw Error(field, "expected true or false, got '" + text + "'");
}

std::vector<int64_t> parse_int_list(const std::string& field, const std::string& text) {
  std::vector<int64_t> out;
  const std::string t = trim(text);
  if (t.empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t comma = t.find(',', start);
    const std::string item = t.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    out.push_back(parse_int(field + "[" + std::to_string(out.size()) + "]", item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string format_int_list(const std::vector<int64_t>& values) {
  std::string s;
  for (size_t i = 0; i < values.size(); ++i) s += (i ? "," : "") + std::to_string(values[i]);
  return s;
}

}  // namespace dtrainer
