#include "dtrainer/parallel/agreement.h"

#include <exception>
#include <vector>

#include "dtrainer/core/error.h"
#include "dtrainer/parallel/watchdog.h"

namespace dtrainer::parallel {

void agree_on(MPI_Comm comm, const std::string& local_error) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const bool failed = !local_error.empty();
  int mine = failed ? rank : world, first = world;
  note_collective();
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first == world) return;
  int one = failed ? 1 : 0, failures = 0;
  MPI_Allreduce(&one, &failures, 1, MPI_INT, MPI_SUM, comm);
  int length = rank == first ? static_cast<int>(local_error.size()) : 0;
  MPI_Bcast(&length, 1, MPI_INT, first, comm);
  std::string text = rank == first ? local_error : std::string(static_cast<size_t>(length), '\0');
  MPI_Bcast(text.data(), length, MPI_CHAR, first, comm);
  if (failures > 1 && failures < world)
    text += " (and " + std::to_string(failures - 1) + " other rank" + (failures > 2 ? "s" : "") + " failed too)";
  throw CollectiveError("rank " + std::to_string(first), text, first, failures);
}

void agree(MPI_Comm comm, const std::function<void()>& fn) {
  std::string error;
  try {
    fn();
  } catch (const CollectiveError&) {
    throw;  // (agreed inside fn already: every rank throws it)
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "unknown error";
  } catch (...) {
    error = "unknown exception";
  }
  agree_on(comm, error);
}

}  // namespace dtrainer::parallel
