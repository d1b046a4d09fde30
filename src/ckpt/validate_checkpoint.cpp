#include "dtrainer/ckpt/validate_checkpoint.h"

#include <algorithm>

#include <torch/torch.h>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/core/error.h"

namespace dtrainer::ckpt {

std::vector<std::string> validate_checkpoint(const CheckpointReader& ck, bool values) {
  std::vector<std::string> problems;
  std::vector<std::pair<std::string, int64_t>> units;
  try {
    units = ck.units();
  } catch (const Error& e) {
    return {e.what()};
  }
  if (ck.format_version() >= 2 || ck.meta().contains("layout")) {  // (format 2 requires it)
    try {
      ck.layout();
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
  }
  int64_t with_ema = 0;
  for (const auto& [unit, numel] : units) with_ema += ck.has(unit, "ema") ? 1 : 0;
  const bool ema = with_ema > 0;
  if (ema && with_ema != static_cast<int64_t>(units.size()))
    problems.push_back(std::to_string(with_ema) + " of " + std::to_string(units.size()) +
                       " units have an EMA dataset (all or none)");
  std::vector<std::string> averages;
  try {
    averages = ck.averages();
  } catch (const Error& e) {
    problems.push_back(e.what());
  }
  if (ema && std::find(averages.begin(), averages.end(), "ema") == averages.end())
    averages.insert(averages.begin(), "ema");
  for (const auto& [unit, numel] : units) {
    std::vector<std::string> kinds{"params", "m", "v"};
    kinds.insert(kinds.end(), averages.begin(), averages.end());
    for (const auto& kind : kinds) {
      const std::string name = "units/" + unit + "/" + kind;
      const int64_t n = ck.stored_length(unit, kind);
      if (n < 0) {
        problems.push_back(name + ": missing");
        continue;
      }
      if (n != numel) {
        problems.push_back(name + ": " + std::to_string(n) + " elements, the manifest says " + std::to_string(numel));
        continue;
      }
      if (!values) continue;
      torch::Tensor t;
      try {
        t = ck.read(unit, kind, numel, /*verify=*/false);
      } catch (const Error& e) {
        problems.push_back(e.what());
        continue;
      }
      const std::string sum = ck.checksum_problem(unit, kind, t);
      if (!sum.empty()) problems.push_back(sum);
      const int64_t bad = (~torch::isfinite(t)).sum().item<int64_t>();
      if (bad) problems.push_back(name + ": " + std::to_string(bad) + " non-finite values");
      if (kind == "v") {
        const int64_t negative = (t < 0).sum().item<int64_t>();
        if (negative) problems.push_back(name + ": " + std::to_string(negative) + " negative second moments");
      }
    }
  }
  return problems;
}

}  // namespace dtrainer::ckpt
