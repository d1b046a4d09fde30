#pragma once
// Learning rate at an optimizer step (counting from 1): linear warm-up over warmup_steps to the
// peak, then constant, or cosine decay to peak * min_ratio at total_steps.

#include <cstdint>
#include <string>

#include "dtrainer/core/name_table.h"

namespace dtrainer::train {

// After the warm-up.
enum class LrDecay { kConstant, kCosine };
const NameTable<LrDecay>& name_table(LrDecay);  // constant | cosine

struct LrSchedule {
  double peak = 1e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  bool cosine = false;
  double min_ratio = 0.0;
  double at(int64_t step) const;
};

}  // namespace dtrainer::train
