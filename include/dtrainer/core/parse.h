#pragma once
// Parsing of the small value syntaxes used by configs and CLIs ("1,2,4", "true", "320").
// Every function names the field in the error it throws.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dtrainer/core/error.h"

namespace dtrainer {

int64_t parse_int(const std::string& field, const std::string& text);
bool parse_bool(const std::string& field, const std::string& text);
// Comma-separated integers; whitespace around items is ignored. Empty text gives an empty list.
std::vector<int64_t> parse_int_list(const std::string& field, const std::string& text);
std::string format_int_list(const std::vector<int64_t>& values);

// (Choices among names: core/name_table.h.)

}  // namespace dtrainer
