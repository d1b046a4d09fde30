#include "dtrainer/core/memory_info.h"

#include <fstream>
#include <sstream>

namespace dtrainer {
namespace {

// The first number in a file ("max" and missing files give -1).
int64_t read_number(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return -1;
  try {
    return std::stoll(text);
  } catch (...) {
    return -1;
  }
}

}  // namespace

HostMemory available_host_memory() {
  HostMemory m;
  std::ifstream in("/proc/meminfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string key;
    int64_t kb = 0;
    if (ls >> key >> kb && key == "MemAvailable:") {
      m.available_bytes = kb * 1024;
      m.source = "MemAvailable";
    }
  }
  // A limit above 2^60 is "unlimited" (cgroup v1 writes LONG_MAX rounded to a page).
  const struct {
    const char *limit, *usage;
  } groups[] = {{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
                {"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"}};
  for (const auto& g : groups) {
    const int64_t limit = read_number(g.limit), usage = read_number(g.usage);
    if (limit <= 0 || limit >= (int64_t{1} << 60) || usage < 0) continue;
    const int64_t left = limit > usage ? limit - usage : 0;
    if (m.available_bytes < 0 || left < m.available_bytes) {
      m.available_bytes = left;
      m.source = g.limit;
    }
  }
  return m;
}

}  // namespace dtrainer
