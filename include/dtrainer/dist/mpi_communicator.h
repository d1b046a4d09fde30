#pragma once
// The MPI backend of Communicator: CPU tensors, non-blocking MPI collectives (MPI_Iallreduce,
// MPI_Ireduce_scatter_block, MPI_Iallgather, MPI_Ibcast) behind Work handles.

#include <mpi.h>

#include <memory>

#include "dtrainer/dist/communicator.h"

namespace dtrainer::dist {

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm);

}  // namespace dtrainer::dist
