#pragma once
// Debian's parallel HDF5 is not built thread-safe, so dtrainer serialises all HDF5 calls through
// one process-wide mutex. Anything that calls HDF5 (shard reader/writer, the loader's prefetch
// thread, checkpoints) must hold it.

#include <mutex>

namespace dtrainer::data {

std::mutex& hdf5_mutex();

}  // namespace dtrainer::data
