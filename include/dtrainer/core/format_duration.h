#pragma once
// Durations for progress lines: "4m07s" under an hour, "2h13m" from an hour on.

#include <string>

namespace dtrainer {

std::string format_duration(double seconds);

}  // namespace dtrainer
