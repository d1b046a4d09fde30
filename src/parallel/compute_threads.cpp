#include "dtrainer/parallel/compute_threads.h"

#include <dlfcn.h>

#include <algorithm>
#include <thread>

#include <ATen/Parallel.h>

namespace dtrainer::parallel {

int64_t set_compute_threads(int64_t requested, int ranks_on_node) {
  const int64_t threads = requested > 0
                              ? requested
                              : std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()) /
                                                         std::max(1, ranks_on_node));
  at::set_num_threads(static_cast<int>(threads));
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    fn(static_cast<int>(threads));
  return threads;
}

}  // namespace dtrainer::parallel
