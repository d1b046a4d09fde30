#pragma once
// The NCCL backend of Communicator: CUDA tensors on one device per rank. Rank 0 creates the
// ncclUniqueId and MPI broadcasts it, so the MPI job is the only bootstrap NCCL needs. Each
// communicator owns a CUDA stream; a collective waits for the work already queued on the caller's
// (LibTorch's current) stream, runs on its own stream, and Work::wait() orders the caller's stream
// after it — a GPU-side dependency, not a host synchronisation.
//
// Built only when CMake found NCCL (DT_WITH_NCCL); otherwise make_nccl_communicator() throws and
// nccl_built() says false, so callers need no #ifdefs.

#include <mpi.h>

#include <memory>

#include "dtrainer/parallel/communicator.h"

namespace dtrainer::parallel {

bool nccl_built();

// `bootstrap`: the ranks of the communicator (MPI_COMM_WORLD, say); `device`: the CUDA device
// this rank drives (its node-local rank, see local_device()).
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm bootstrap, int device);

}  // namespace dtrainer::parallel
