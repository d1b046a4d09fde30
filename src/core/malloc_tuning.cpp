#include "dtrainer/core/malloc_tuning.h"

#include <malloc.h>

namespace dtrainer {

void tune_malloc_for_streaming() {
  // Blocks below 1 GiB come from the heap (reused) rather than from a fresh mmap each time, and
  // up to 2 GiB of freed heap is kept instead of being returned to the kernel.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, static_cast<int>((2u << 30) - 1));
}

}  // namespace dtrainer
