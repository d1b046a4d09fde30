#pragma once
// Job files: TOML read by a real TOML parser (toml++), flattened to the key = value items the
// options take. Malformed TOML (an unterminated string or array, a duplicate key, a bad number)
// is an error naming the file, line and column; so are sections (keys are flat, as the options
// are), nested arrays and dates.

#include <cstdint>
#include <string>
#include <vector>

namespace dtrainer::train {

struct JobItem {
  std::string key;
  std::vector<std::string> values;  // one for a scalar, one per element for an array
  std::string kind;                 // TOML's type: string | integer | float | boolean | array
  int64_t line = 0, column = 0;     // where the key is in the file
};

// Parses TOML text (`source` names it in errors). Throws Error("FILE:LINE:COLUMN", what).
std::vector<JobItem> parse_job_toml(const std::string& text, const std::string& source);

// `v` as a TOML basic string ("...", quotes and backslashes escaped), as job files hold it.
std::string toml_string(const std::string& v);

// Reads and parses a job file.
std::vector<JobItem> read_job_file(const std::string& path);

}  // namespace dtrainer::train
