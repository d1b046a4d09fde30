#pragma once
// The names of a choice (an enum class): one table per enum, read by every parser of it (job files,
// command lines, checkpoints) and by every writer (config.toml, --help, plans), so a new value is
// added in one place. An enum `E` is declared with its table beside it:
//
//   enum class Target { kEps, kV, kFlow };
//   const NameTable<Target>& name_table(Target);  // {{"eps", Target::kEps}, ...}
//
// and generic code finds the table by argument-dependent lookup: name_table(E{}).

#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dtrainer/core/error.h"

namespace dtrainer {

template <typename E>
class NameTable {
 public:
  NameTable(std::initializer_list<std::pair<const char*, E>> entries) : entries_(entries) {}

  std::optional<E> find(const std::string& text) const {
    for (const auto& [name, value] : entries_)
      if (text == name) return value;
    return std::nullopt;
  }
  // Throws Error(field) listing the accepted names.
  E parse(const std::string& field, const std::string& text) const {
    if (const auto v = find(text)) return *v;
    throw Error(field, "expected one of " + joined(", ") + "; got '" + text + "'");
  }
  const char* name(E value) const {
    for (const auto& [name, v] : entries_)
      if (v == value) return name;
    return "?";
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.first);
    return out;
  }
  std::string joined(const std::string& separator = " | ") const {
    std::string out;
    for (const auto& e : entries_) out += (out.empty() ? "" : separator) + e.first;
    return out;
  }
  const std::vector<std::pair<const char*, E>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<const char*, E>> entries_;
};

// The name of any enum that has a table.
template <typename E>
const char* name_of(E value) {
  return name_table(E{}).name(value);
}

}  // namespace dtrainer
