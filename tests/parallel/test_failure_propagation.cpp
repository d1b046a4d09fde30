// A rank that throws or dies ends the whole job: every rank exits, non-zero, and the failing
// rank is named — no rank hangs in a collective.
//
// This binary is both the test and its fixture: run normally it is a Catch2 test that launches
// itself under mpirun with --fail-rank-fixture R MODE; in that mode rank R fails (MODE throw: an
// exception escapes run_ranks' body; die: abort()) while the other ranks wait in a collective.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include <torch/torch.h>

#include "dtrainer/parallel/mpi_communicator.h"
#include "dtrainer/parallel/mpi_runtime.h"
#include "run_process.h"

namespace {

std::string self_path;

int fail_rank_fixture(int argc, char** argv) {
  const int fail_rank = std::atoi(argv[2]);
  const std::string mode = argv[3];
  return dtrainer::parallel::run_ranks(&argc, &argv, [&](dtrainer::parallel::MpiRuntime& rt) {
    auto comm = dtrainer::parallel::make_mpi_communicator(rt.comm());
    torch::Tensor t = torch::ones({1024});
    comm->all_reduce(t, dtrainer::parallel::ReduceOp::kSum);  // everyone gets here
    if (rt.rank() == fail_rank) {
      if (mode == "die") std::abort();
      throw std::runtime_error("deliberate failure in the test");
    }
    comm->all_reduce(t, dtrainer::parallel::ReduceOp::kSum);  // the others block here until the job is torn down
    return 0;
  });
}

dtrainer::test::ProcessResult run_job(int ranks, int fail_rank, const std::string& mode) {
  // `timeout` turns a hang into exit 124, which the checks below reject.
  return dtrainer::test::run_process("timeout 120 " + std::string(MPIEXEC) + " -n " + std::to_string(ranks) +
                                     " --oversubscribe -x OMP_NUM_THREADS=1 " + self_path + " --fail-rank-fixture " +
                                     std::to_string(fail_rank) + " " + mode);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--fail-rank-fixture") == 0) return fail_rank_fixture(argc, argv);
  self_path = argv[0];
  return Catch::Session().run(argc, argv);
}

TEST_CASE("an exception on one rank aborts every rank, naming the rank") {
  const auto r = run_job(2, 1, "throw");
  INFO(r.out);
  CHECK(r.status != 0);
  CHECK(r.status != 124);  // not a hang
  CHECK_THAT(r.out, Catch::Contains("rank 1: error: deliberate failure in the test"));
}

TEST_CASE("a rank that dies (abort) ends the job with a non-zero exit naming it") {
  const auto r = run_job(4, 2, "die");
  INFO(r.out);
  CHECK(r.status != 0);
  CHECK(r.status != 124);
  CHECK_THAT(r.out, Catch::Contains("rank 2"));
}
