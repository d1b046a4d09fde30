#include "dtrainer/train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace dtrainer::train {

const NameTable<LrDecay>& name_table(LrDecay) {
  static const NameTable<LrDecay> t{{"constant", LrDecay::kConstant}, {"cosine", LrDecay::kCosine}};
  return t;
}

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps)
    return peak * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (!cosine) return peak;
  const double span = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  const double pi = std::acos(-1.0);
  return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + std::cos(pi * progress)));
}

}  // namespace dtrainer::train
