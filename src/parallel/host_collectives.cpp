#include "dtrainer/parallel/host_collectives.h"

#include "dtrainer/core/error.h"
#include "dtrainer/parallel/watchdog.h"

namespace dtrainer::parallel {
namespace {

MPI_Op mpi_op(HostOp op) {
  switch (op) {
    case HostOp::kSum: return MPI_SUM;
    case HostOp::kMax: return MPI_MAX;
    case HostOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

}  // namespace

std::vector<double> all_reduce_host(MPI_Comm comm, std::vector<double> values, HostOp op) {
  note_collective();
  MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, mpi_op(op), comm);
  return values;
}

NamedFigures::NamedFigures(std::initializer_list<std::pair<const char*, double>> figures) {
  for (const auto& [name, value] : figures) {
    names_.emplace_back(name);
    values_.push_back(value);
  }
}

double NamedFigures::operator[](const std::string& name) const {
  for (size_t i = 0; i < names_.size(); ++i)
    if (names_[i] == name) return values_[i];
  throw Error("NamedFigures", "no figure '" + name + "'");
}

NamedFigures NamedFigures::reduced(MPI_Comm comm, HostOp op) const {
  NamedFigures r = *this;
  r.values_ = all_reduce_host(comm, values_, op);
  return r;
}

void broadcast_host(MPI_Comm comm, std::vector<int64_t>& values, int root) {
  note_collective();
  MPI_Bcast(values.data(), static_cast<int>(values.size()), MPI_INT64_T, root, comm);
}

void broadcast_host(MPI_Comm comm, std::vector<uint64_t>& values, int root) {
  note_collective();
  MPI_Bcast(values.data(), static_cast<int>(values.size()), MPI_UINT64_T, root, comm);
}

std::string broadcast_host(MPI_Comm comm, std::string text, int root) {
  std::vector<int64_t> length = {static_cast<int64_t>(text.size())};
  broadcast_host(comm, length, root);
  text.resize(static_cast<size_t>(length[0]));
  note_collective();
  MPI_Bcast(text.data(), static_cast<int>(length[0]), MPI_CHAR, root, comm);
  return text;
}

std::vector<uint64_t> gather_host(MPI_Comm comm, const std::vector<uint64_t>& values, int root) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  std::vector<uint64_t> all(rank == root ? values.size() * static_cast<size_t>(world) : 0);
  note_collective();
  MPI_Gather(values.data(), static_cast<int>(values.size()), MPI_UINT64_T, all.data(), static_cast<int>(values.size()),
             MPI_UINT64_T, root, comm);
  return all;
}

void barrier_host(MPI_Comm comm) {
  note_collective();
  MPI_Barrier(comm);
}

}  // namespace dtrainer::parallel
