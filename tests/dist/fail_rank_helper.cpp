// Test helper, run under mpirun by test_failure_propagation: rank `--fail-rank` fails while the
// other ranks wait in a collective. Modes: throw (an exception escapes the body) or die (abort()).
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include <torch/torch.h>

#include "dtrainer/dist/mpi_communicator.h"
#include "dtrainer/dist/mpi_runtime.h"

int main(int argc, char** argv) {
  const int fail_rank = argc > 1 ? std::atoi(argv[1]) : 1;
  const std::string mode = argc > 2 ? argv[2] : "throw";
  return dtrainer::dist::run_ranks(&argc, &argv, [&](dtrainer::dist::MpiRuntime& rt) {
    auto comm = dtrainer::dist::make_mpi_communicator(rt.comm());
    torch::Tensor t = torch::ones({1024});
    comm->all_reduce(t, dtrainer::dist::ReduceOp::kSum);  // everyone gets here
    if (rt.rank() == fail_rank) {
      if (mode == "die") std::abort();
      throw std::runtime_error("deliberate failure in the test");
    }
    comm->all_reduce(t, dtrainer::dist::ReduceOp::kSum);  // the others block here until the job is torn down
    return 0;
  });
}
