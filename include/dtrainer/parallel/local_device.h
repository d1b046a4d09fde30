#pragma once
// Which device a rank computes on, and the communicator for tensors there.

#include <memory>
#include <string>

#include <torch/types.h>

#include "dtrainer/parallel/communicator.h"
#include "dtrainer/parallel/device_choice.h"
#include "dtrainer/parallel/mpi_runtime.h"

namespace dtrainer::parallel {

// The CPU when LibTorch sees no CUDA device; cuda:<node-local rank> when each rank sees all of the
// node's GPUs; cuda:0 when each rank sees one (bound per task), after checking over the node's
// ranks that no two see the same GPU. Ranks sharing a GPU, or more ranks than GPUs, are an error
// naming the rank (two ranks on one GPU would halve each other's memory and serialise their kernels).
torch::Device local_device(const MpiRuntime& rt);

// The device for a --device choice: "cpu"; "cuda" (cuda:<node-local rank>; an error naming the
// rank when LibTorch sees no CUDA device, or the build has no NCCL); "auto" (local_device: a GPU
// where there are GPUs, else the CPU). Anything else is an error naming the field.
torch::Device select_device(const MpiRuntime& rt, DeviceChoice choice);
torch::Device select_device(const MpiRuntime& rt, const std::string& choice);

// The communicator for tensors on `device`: NCCL for CUDA devices (an error if this build has no
// NCCL), MPI for the CPU.
std::unique_ptr<Communicator> make_communicator(const MpiRuntime& rt, const torch::Device& device);

}  // namespace dtrainer::parallel
