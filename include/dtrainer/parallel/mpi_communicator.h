#pragma once
// The MPI backend of Communicator: CPU tensors; synchronous calls use the blocking MPI
// collectives, asynchronous ones the non-blocking MPI_I* variants behind Work handles.

#include <mpi.h>

#include <memory>

#include "dtrainer/parallel/communicator.h"

namespace dtrainer::parallel {

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm);

}  // namespace dtrainer::parallel
