#include "dtrainer/core/step_name.h"

#include <cstdio>

namespace dtrainer {

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

}  // namespace dtrainer
