// The NCCL backend of a build without NCCL: asking for it is an error that says how to get it.
#include "dtrainer/core/error.h"
#include "dtrainer/parallel/nccl_communicator.h"

namespace dtrainer::parallel {

bool nccl_built() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm, int) {
  throw Error("communicator.nccl",
              "this dtrainer was built without NCCL; configure with CUDA-enabled LibTorch and "
              "-DNCCL_ROOT=<folder with include/nccl.h and lib/libnccl.so> (see scripts/ and docs/PARALLEL.md)");
}

}  // namespace dtrainer::parallel
