#pragma once
// How many [S2] control scalars there are (torch-free, for the analytic counts).

#include <cstdint>

namespace dtrainer::models {

constexpr int64_t kHighLevelControls = 4;  // phi_h: crop top, crop left, horizontal flip (0/1), aspect ratio
constexpr int64_t kLowLevelControls = 2;   // phi_l: original image height, width

}  // namespace dtrainer::models
