// The one place where dtrainer's programs choose and configure their allocator. Compiled into every
// executable (the dtrainer_allocator object library; CMake DT_ALLOCATOR picks the branch), never
// into a library: a library never changes process-wide state.
//
// jemalloc (default). A training step allocates and frees the same few gigabytes of activations,
// gradients and workspaces every step. Measured on sdxl-c128 (batch 2, fp32, one thread; see
// bench/RESULTS.md, "Allocator"):
//   glibc                                   8.6 M minor faults per run, most of the step in the kernel
//   jemalloc defaults                      10.5 M (it returns idle memory to the kernel after 10 s, and
//                                                   blocks over 8 MiB go to an arena that does so at once)
//   + no decay, no oversize arena           2.5 M (each page faults once, on first use)
//   + transparent huge pages                17 K  (2 MiB pages: 512 x fewer faults, fewer TLB misses)
// and then, per step at steady state (dtbench train reports the allocator's counters): the program
// held the same bytes but jemalloc's resident memory grew by 344 MiB a step, 1.7 s of kernel time
// zeroing fresh pages, because a freed extent is not split for a request more than 64x smaller
// (lg_extent_max_active_fit 6): with any split allowed (30) it stays flat, 0.26 s; one arena
// (narenas 1) for all threads lets what one OpenMP worker frees serve another: 0.17 s, and the
// step of sdxl-c128 at 2 threads went from 6.4-7.1 s to 4.9 s.
// so: freed memory stays with the process (dirty_decay_ms/muzzy_decay_ms -1: the footprint is the
// step's peak, which the memory plan budgets for anyway), large blocks share the arenas
// (oversize_threshold 0) and are cut from any free extent (lg_extent_max_active_fit 30), one arena
// serves every thread (narenas 1; small blocks still come from per-thread caches), and jemalloc asks
// for huge pages for everything it maps (thp:always; the kernel's THP mode is usually "madvise",
// which this satisfies). MALLOC_CONF overrides any of these.
//
// mimalloc. Its defaults (it keeps freed segments for reuse; MIMALLOC_* variables override).
//
// system. glibc, with blocks up to 32 MiB (the largest mmap threshold glibc accepts on 64-bit) kept
// on the heap instead of mmap()ed and unmapped each time, and up to 2 GiB of freed heap kept: the
// hand-tuned setting jemalloc replaced. Larger blocks still fault on every use.

#include "dtrainer/core/allocator.h"

#if defined(DT_ALLOCATOR_SYSTEM)
#include <malloc.h>
#endif

extern "C" {
#if defined(DT_ALLOCATOR_JEMALLOC)
// Read by jemalloc when it initialises (before main); the executable's definition overrides the
// library's weak one. `used` + default visibility keep it in the dynamic symbol table.
__attribute__((used, visibility("default"))) const char* malloc_conf =
    "dirty_decay_ms:-1,muzzy_decay_ms:-1,oversize_threshold:0,lg_extent_max_active_fit:30,narenas:1,thp:always,"
    "metadata_thp:always";
#endif
}

namespace dtrainer {

#if defined(DT_ALLOCATOR_JEMALLOC)
const char* configured_allocator() { return "jemalloc"; }
#elif defined(DT_ALLOCATOR_MIMALLOC)
const char* configured_allocator() { return "mimalloc"; }
#else
const char* configured_allocator() { return "system"; }

namespace {
__attribute__((constructor)) void keep_large_blocks_on_the_heap() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, static_cast<int>((2u << 30) - 1));
}
}  // namespace
#endif

}  // namespace dtrainer
