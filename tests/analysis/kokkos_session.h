#pragma once
// Kokkos (bootstrap loops) and quiet Ceres logging for the analysis tests, set up once per executable.

#include <Kokkos_Core.hpp>

#include "dtrainer/analysis/chinchilla_fit.h"

namespace dtrainer::test {

struct KokkosSession {
  KokkosSession() {
    Kokkos::initialize();
    analysis::quiet_solver_logging();  // Ceres' glog warnings (line-search details) would bury the test log
  }
  ~KokkosSession() { Kokkos::finalize(); }
};

inline void ensure_kokkos_session() { static KokkosSession session; }

}  // namespace dtrainer::test
