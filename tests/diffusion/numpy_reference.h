#pragma once
// Runs tests/diffusion/reference.py with the numpy-capable python CMake found; returns its JSON.

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

namespace dtrainer::test {

inline nlohmann::json numpy_reference() {
  static const nlohmann::json cached = [] {
    const std::string cmd = std::string(DT_NUMPY_PYTHON) + " " + DT_REFERENCE_SCRIPT;
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while (p && (n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int status = p ? pclose(p) : -1;
    if (status != 0) throw std::runtime_error("reference script failed: " + cmd);
    return nlohmann::json::parse(out);
  }();
  return cached;
}

}  // namespace dtrainer::test
