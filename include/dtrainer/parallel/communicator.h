#pragma once
// Collective communication on torch tensors, behind one interface with an MPI backend (CPU
// tensors) and — when CMake finds NCCL — an NCCL backend (CUDA tensors). Every operation can run
// asynchronously and return a Work handle to wait on.

#include <memory>

#include <torch/types.h>

namespace dtrainer::parallel {

enum class ReduceOp { kSum, kAvg };

class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;  // blocks until the operation's result is in place; idempotent
  // Drives progress without blocking (MPI moves non-blocking collectives only inside MPI calls);
  // true once complete. wait() is still needed to finish (it copies back, divides for kAvg).
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual const char* backend() const = 0;

  // In place on `t` (contiguous). fp32 / fp64 reduce natively; bf16 / fp16 are reduced in fp32
  // (summing in 8-bit mantissas would lose what the reduction is for) and converted back.
  virtual std::shared_ptr<Work> all_reduce(torch::Tensor t, ReduceOp op, bool async = false) = 0;
  // in [world * n] -> out [n]: rank r receives the reduction of every rank's chunk r.
  virtual std::shared_ptr<Work> reduce_scatter(torch::Tensor in, torch::Tensor out, ReduceOp op,
                                               bool async = false) = 0;
  // in [n] -> out [world * n]: every rank receives all ranks' chunks, in rank order.
  virtual std::shared_ptr<Work> all_gather(torch::Tensor in, torch::Tensor out, bool async = false) = 0;
  virtual std::shared_ptr<Work> broadcast(torch::Tensor t, int root, bool async = false) = 0;
  virtual void barrier() = 0;
  // A communicator over the same ranks whose operations are ordered independently of this one's
  // (MPI_Comm_dup): collectives must be issued in the same order on every rank per communicator,
  // so two streams of operations whose interleaving may differ between ranks need two of them.
  virtual std::unique_ptr<Communicator> duplicate() const = 0;
};

}  // namespace dtrainer::parallel
