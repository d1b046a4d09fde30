#pragma once
// The allocator behind malloc/free in this process, as found at run time.
//
// Every dtrainer program links one allocator chosen at configure time (CMake DT_ALLOCATOR, cmake/ProgramRuntime.cmake:
// jemalloc, the default, mimalloc or system), with its settings in one file,
// src/core/allocator_settings.cpp. Why: a training step frees and re-allocates gigabytes of
// activations and gradients; glibc serves each block above its mmap threshold with a fresh mmap and
// unmaps it on free, so every step page-faults and zero-fills the same memory again (measured on
// sdxl-c128: 8.6 M minor faults and most of the step in the kernel; bench/RESULTS.md).
//
// allocator_in_use() does not trust the build: it asks the allocators' own interfaces which one is
// loaded and checks that a fresh malloc() block is really its (an allocator that is loaded but not
// interposed on malloc is reported as not serving it).

#include <cstdint>
#include <string>

namespace dtrainer {

struct AllocatorInfo {
  std::string name;            // "jemalloc", "mimalloc" or "glibc"
  std::string version;         // the allocator's own version string
  std::string settings;        // the settings in effect that dtrainer sets (its own report, where it has one)
  bool serves_malloc = false;  // a malloc() block was seen to come from it
};

AllocatorInfo allocator_in_use();

// The allocator DT_ALLOCATOR selected for this build ("jemalloc", "mimalloc", "system"). Defined by
// dtrainer_allocator, so only programs that link it (dt_program_runtime) can call it.
const char* configured_allocator();

// The allocator's own counters, where it has them (jemalloc): bytes the program holds (allocated)
// and bytes of physical memory the allocator occupies (resident). -1: unknown (other allocators).
// allocated growing step after step is a leak; resident growing while allocated does not is the
// allocator not reusing freed memory (each new page then faults in).
struct AllocatorStats {
  int64_t allocated = -1, resident = -1;
};
AllocatorStats allocator_stats();

// One line for a program's start-up log: "allocator: jemalloc 5.3.0 (...)".
std::string describe(const AllocatorInfo& a);

}  // namespace dtrainer
