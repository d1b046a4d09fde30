#pragma once
// Collectives on a few host values (figures, flags, offsets, short text): the one place outside
// the tensor communicators (parallel/communicator.h) and the agreement on failures
// (parallel/agreement.h) where train/, ckpt/ and the tools reach MPI. Every call counts as a
// collective for the watchdog (parallel/watchdog.h), which is what lets it name a rank that is behind.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <mpi.h>

namespace dtrainer::parallel {

enum class HostOp { kSum, kMax, kMin };

std::vector<double> all_reduce_host(MPI_Comm comm, std::vector<double> values, HostOp op);

// Figures reduced together, read back by name: `r["step_time"]` (an unknown name throws Error).
class NamedFigures {
 public:
  NamedFigures(std::initializer_list<std::pair<const char*, double>> figures);
  double operator[](const std::string& name) const;
  NamedFigures reduced(MPI_Comm comm, HostOp op) const;  // collective

 private:
  std::vector<std::string> names_;
  std::vector<double> values_;
};

// Rank `root`'s values (or text) on every rank; `values` keeps its size (the same on every rank).
void broadcast_host(MPI_Comm comm, std::vector<int64_t>& values, int root = 0);
void broadcast_host(MPI_Comm comm, std::vector<uint64_t>& values, int root = 0);
std::string broadcast_host(MPI_Comm comm, std::string text, int root = 0);

// Every rank's `values` (the same count on each), concatenated in rank order on `root` (empty
// elsewhere).
std::vector<uint64_t> gather_host(MPI_Comm comm, const std::vector<uint64_t>& values, int root = 0);

void barrier_host(MPI_Comm comm);

}  // namespace dtrainer::parallel
