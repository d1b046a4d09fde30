#pragma once
// Agreement on failure: the one rule that keeps a failing rank from hanging the others. A step
// that can fail on some ranks only (a write, a read, a check of local state) runs everywhere, then
// every rank learns whether any failed; if one did, every rank throws the same CollectiveError
// ("rank R: <its message>"), so they all leave the collective code path together and the job ends
// with a non-zero exit on every rank and one clear message. Nobody throws alone between
// collectives, and nobody waits in a collective for a rank that has left.
//
//   parallel::agree(comm, [&] { write_my_slice(); });        // throws CollectiveError on every rank
//   parallel::agree_on(comm, local_error_or_empty);          // the same, for a result computed already
//
// Cost on success: one all-reduce of one integer.

#include <mpi.h>

#include <functional>
#include <string>

namespace dtrainer::parallel {

// local_error: empty when this rank succeeded. Throws CollectiveError on every rank when any
// rank's is non-empty: the lowest failing rank's message, with how many others failed.
void agree_on(MPI_Comm comm, const std::string& local_error);

// Runs fn, turning any exception it throws into this rank's error, then agree_on().
void agree(MPI_Comm comm, const std::function<void()>& fn);

}  // namespace dtrainer::parallel
