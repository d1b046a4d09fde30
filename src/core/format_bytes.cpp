#include "dtrainer/core/format_bytes.h"

#include <cstdio>

namespace dtrainer {

std::string format_bytes(double b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) {
    b /= 1024;
    ++i;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", b, unit[i]);
  return buf;
}

}  // namespace dtrainer
