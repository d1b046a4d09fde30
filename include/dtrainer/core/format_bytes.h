#pragma once
// Byte counts for people: "17.63 MiB" (binary units, two decimals).

#include <string>

namespace dtrainer {

std::string format_bytes(double bytes);

}  // namespace dtrainer
