#pragma once
// The MPI runtime shared by the tests of one MPI test executable (initialised on first use,
// finalised at exit, after Catch2's main returns).

#include "dtrainer/parallel/mpi_runtime.h"

namespace dtrainer::test {

inline parallel::MpiRuntime& mpi_runtime() {
  static int argc = 0;
  static char** argv = nullptr;
  static parallel::MpiRuntime rt(&argc, &argv);
  return rt;
}

}  // namespace dtrainer::test
