#pragma once
// The name a step's files and folders carry in a run directory: "step_00000600" (eight digits,
// so names sort as steps do). Checkpoints, sample grids and alignment folders all use it.

#include <cstdint>
#include <string>

namespace dtrainer {

std::string step_name(int64_t step);

}  // namespace dtrainer
