// A rank that throws or dies ends the whole job: every rank exits, non-zero, and the failing
// rank is named — no rank hangs in a collective. Runs the helper under mpirun.
#include <catch2/catch.hpp>

#include "run_process.h"

namespace {
dtrainer::test::ProcessResult run_job(int ranks, int fail_rank, const std::string& mode) {
  // `timeout` turns a hang into exit 124, which the checks below reject.
  return dtrainer::test::run_process("timeout 120 " + std::string(MPIEXEC) + " -n " + std::to_string(ranks) +
                                     " --oversubscribe -x OMP_NUM_THREADS=1 " + FAIL_HELPER + " " + std::to_string(fail_rank) + " " + mode);
}
}  // namespace

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
