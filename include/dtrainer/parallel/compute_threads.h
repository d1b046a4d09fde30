#pragma once
// Compute threads per rank, so that ranks x threads = the node's cores. LibTorch's intra-op pool
// and OpenBLAS's own pool are both set: OpenBLAS sizes its pool from OPENBLAS_NUM_THREADS /
// OMP_NUM_THREADS, which at::set_num_threads does not reach (it is found at run time, so a BLAS
// other than OpenBLAS still works).

#include <cstdint>

namespace dtrainer::parallel {

// `requested` threads, or when 0 the hardware threads / `ranks_on_node` (at least 1). Returns the
// number set.
int64_t set_compute_threads(int64_t requested, int ranks_on_node);

}  // namespace dtrainer::parallel
