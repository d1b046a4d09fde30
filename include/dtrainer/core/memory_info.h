#pragma once
// How much host memory a process can still take: the kernel's MemAvailable (/proc/meminfo),
// lowered to what the memory cgroup (v2 memory.max, v1 memory.limit_in_bytes — Slurm's and
// containers' limits) leaves. For refusing a run that cannot fit before it is OOM-killed.

#include <cstdint>
#include <string>

namespace dtrainer {

struct HostMemory {
  int64_t available_bytes = -1;  // -1: unknown (no /proc/meminfo)
  std::string source;            // "MemAvailable", or the cgroup file that was lower
};

HostMemory available_host_memory();

}  // namespace dtrainer
