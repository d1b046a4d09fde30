#include "dtrainer/train/weight_averaging.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "dtrainer/core/error.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/parallel/power_ema.h"
#include "dtrainer/train/train_config.h"

namespace dtrainer::train {

const NameTable<WeightAveraging>& name_table(WeightAveraging) {
  static const NameTable<WeightAveraging> t{{"exponential", WeightAveraging::kExponential},
                                            {"phema", WeightAveraging::kPhema},
                                            {"none", WeightAveraging::kNone}};
  return t;
}

const NameTable<SnapshotDtype>& name_table(SnapshotDtype) {
  static const NameTable<SnapshotDtype> t{
      {"fp16", SnapshotDtype::kFp16}, {"bf16", SnapshotDtype::kBf16}, {"fp32", SnapshotDtype::kFp32}};
  return t;
}

double exponential_ema_decay(const TrainConfig& c) {
  return c.ema == WeightAveraging::kExponential ? c.ema_decay : 0.0;
}

std::vector<double> phema_profiles(const TrainConfig& c) {
  return c.ema == WeightAveraging::kPhema ? c.phema_sigma_rel : std::vector<double>{};
}

int weight_average_count(const TrainConfig& c) {
  return (exponential_ema_decay(c) > 0 ? 1 : 0) + static_cast<int>(phema_profiles(c).size());
}

std::vector<double> weight_average_decays(const TrainConfig& c, int64_t step) {
  std::vector<double> d;
  const double s = static_cast<double>(step);
  if (exponential_ema_decay(c) > 0) d.push_back(std::min(c.ema_decay, (1.0 + s) / (10.0 + s)));
  const double batch = static_cast<double>(c.global_batch);
  for (const double sigma : phema_profiles(c))
    d.push_back(parallel::phema_beta(parallel::phema_gamma(sigma), s * batch, batch));
  return d;
}

int64_t phema_snapshot_interval(const TrainConfig& c) {
  if (phema_profiles(c).empty()) return 0;
  if (c.phema_snapshot_images > 0) return c.phema_snapshot_images;
  const int64_t steps_between = std::max<int64_t>(1, (c.steps + 31) / 32);
  return steps_between * c.global_batch;
}

bool phema_snapshot_due(const TrainConfig& c, int64_t step) {
  const int64_t every = phema_snapshot_interval(c);
  if (every == 0 || step < 1) return false;
  return step == c.steps || (step * c.global_batch) % every == 0;
}

std::string describe_weight_averaging(const TrainConfig& c, int64_t params) {
  char buf[256];
  if (exponential_ema_decay(c) > 0) {
    std::snprintf(buf, sizeof buf, "EMA, decay %g (warmed up as (1 + step) / (10 + step))", c.ema_decay);
    return buf;
  }
  const std::vector<double> profiles = phema_profiles(c);
  if (profiles.empty()) return "none";
  std::string out = "phema, sigma_rel";
  for (size_t i = 0; i < profiles.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%s %g (gamma %.2f)", i ? "," : "", profiles[i], parallel::phema_gamma(profiles[i]));
    out += buf;
  }
  const int64_t every = phema_snapshot_interval(c);
  const int64_t images = c.steps * c.global_batch;
  const int64_t count = images / every + (images % every ? 1 : 0);  // (and the last step's)
  const int64_t element = c.phema_snapshot_dtype == SnapshotDtype::kFp32 ? 4 : 2;
  const double bytes =
      static_cast<double>(params) * static_cast<double>(profiles.size()) * static_cast<double>(element);
  std::snprintf(buf, sizeof buf, "; snapshots every %lld images (%lld over the run, %s, %s each, %s in all)",
                static_cast<long long>(every), static_cast<long long>(count), name_of(c.phema_snapshot_dtype),
                format_bytes(bytes).c_str(), format_bytes(bytes * static_cast<double>(count)).c_str());
  return out + buf;
}

void validate_weight_averaging(const TrainConfig& c) {
  if (c.ema != WeightAveraging::kPhema) return;
  if (c.phema_sigma_rel.empty())
    throw Error("phema_sigma_rel", "ema = \"phema\" needs at least one profile (EDM2: [0.05, 0.10])");
  for (size_t i = 0; i < c.phema_sigma_rel.size(); ++i) {
    parallel::phema_gamma(c.phema_sigma_rel[i], "phema_sigma_rel");
    for (size_t j = 0; j < i; ++j)
      if (parallel::phema_name(c.phema_sigma_rel[i]) == parallel::phema_name(c.phema_sigma_rel[j]))
        throw Error("phema_sigma_rel", parallel::phema_name(c.phema_sigma_rel[i]).substr(6) + " is listed twice");
  }
  const int64_t every = c.phema_snapshot_images;
  if (every > 0 && every % c.global_batch != 0) {
    const int64_t below = every / c.global_batch * c.global_batch, above = below + c.global_batch;
    throw Error("phema_snapshot_images",
                std::to_string(every) + " is not a multiple of global_batch " + std::to_string(c.global_batch) +
                    " (snapshots fall on step boundaries): take " +
                    (below > 0 ? std::to_string(below) + " or " : std::string()) + std::to_string(above));
  }
}

}  // namespace dtrainer::train
