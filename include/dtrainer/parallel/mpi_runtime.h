#pragma once
// The MPI process runtime: initialisation, world and node-local ranks, clean shutdown, and the
// one way a failing rank ends the job (every rank exits non-zero, the failing rank named — no
// rank is left waiting in a collective).

#include <mpi.h>

#include <functional>
#include <string>

namespace dtrainer::parallel {

class MpiRuntime {
 public:
  // Initialises MPI unless already done, asking for MPI_THREAD_MULTIPLE (the watchdog thread
  // talks to the other ranks' watchdogs; every other MPI call is made by the main thread) and
  // accepting MPI_THREAD_FUNNELED.
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();  // finalises if this object initialised MPI
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return local_rank_; }    // rank among the processes of this node
  int local_world() const { return local_world_; }  // processes on this node (one GPU each: parallel/local_device.h)
  MPI_Comm comm() const { return MPI_COMM_WORLD; }
  MPI_Comm node_comm() const { return node_comm_; }          // the processes of this node
  bool thread_multiple() const { return thread_multiple_; }  // MPI_THREAD_MULTIPLE provided

  // Prints "rank R: <message>" to stderr and aborts the whole job with `code` (MPI_Abort makes
  // mpirun stop every rank). For errors that escape a program's main loop.
  [[noreturn]] void abort_job(const std::string& message, int code = 1) const;

 private:
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_world_ = 1;
  bool owns_ = false, thread_multiple_ = false;
  MPI_Comm node_comm_ = MPI_COMM_NULL;
};

// The main() of an MPI program: initialises the runtime and logging, runs `body`, and turns any
// exception escaping it on any rank into abort_job() naming that rank, so the job ends at once
// with a non-zero exit on every rank instead of leaving the others blocked in a collective. A
// CollectiveError (every rank holds it: parallel/agreement.h) ends every rank normally with exit 1,
// rank 0 printing it.
int run_ranks(int* argc, char*** argv, const std::function<int(MpiRuntime&)>& body);

}  // namespace dtrainer::parallel
