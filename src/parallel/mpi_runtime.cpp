#include "dtrainer/parallel/mpi_runtime.h"

#include <cstdio>

#include "dtrainer/core/error.h"
#include "dtrainer/core/library_cleanup.h"
#include "dtrainer/core/log.h"

namespace dtrainer::parallel {

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    int provided = 0;
    // MULTIPLE lets the watchdog thread survey the ranks (parallel/watchdog.h); FUNNELED is enough to train.
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
      throw Error("mpi", "MPI_Init_thread failed");
    if (provided < MPI_THREAD_FUNNELED) throw Error("mpi", "the MPI library does not support MPI_THREAD_FUNNELED");
    owns_ = true;
  }
  int level = 0;
  MPI_Query_thread(&level);
  thread_multiple_ = level >= MPI_THREAD_MULTIPLE;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_);
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm_);
  MPI_Comm_rank(node_comm_, &local_rank_);
  MPI_Comm_size(node_comm_, &local_world_);
}

MpiRuntime::~MpiRuntime() {
  if (node_comm_ != MPI_COMM_NULL) MPI_Comm_free(&node_comm_);
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (owns_ && !finalised) MPI_Finalize();
}

void MpiRuntime::abort_job(const std::string& message, int code) const {
  std::fprintf(stderr, "rank %d: %s\n", rank_, message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this is for the type system
}

int run_ranks(int* argc, char*** argv, const std::function<int(MpiRuntime&)>& body) {
  MpiRuntime runtime(argc, argv);
  set_log_rank(runtime.rank(), runtime.world());
  try {
    return body(runtime);
  } catch (const CollectiveError& e) {
    // Every rank holds this error (parallel/agreement.h): end normally, all non-zero, one message.
    if (runtime.rank() == 0) {
      std::fprintf(stderr, "error: %s\n", e.what());
      std::fflush(stderr);
    }
    // A library on some rank cannot clean up after this failure (core/library_cleanup.h): every
    // rank leaves without MPI_Finalize, whose hooks would run that cleanup, after rank 0 spoke.
    int forbidden = library_cleanup_forbidden() ? 1 : 0, any = 0;
    MPI_Allreduce(&forbidden, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any) {
      std::fflush(stdout);
      MPI_Barrier(MPI_COMM_WORLD);
      std::_Exit(1);
    }
    return 1;
  } catch (const std::exception& e) {
    runtime.abort_job(std::string("error: ") + e.what());
  } catch (...) {
    runtime.abort_job("error: unknown exception");
  }
}

}  // namespace dtrainer::parallel
