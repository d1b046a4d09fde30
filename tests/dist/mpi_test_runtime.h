#pragma once
// The MPI runtime shared by the tests of one MPI test executable (initialised on first use,
// finalised at exit, after Catch2's main returns).

#include "dtrainer/dist/mpi_runtime.h"

namespace dtrainer::test {

inline dist::MpiRuntime& mpi_runtime() {
  static int argc = 0;
  static char** argv = nullptr;
  static dist::MpiRuntime rt(&argc, &argv);
  return rt;
}

}  // namespace dtrainer::test
