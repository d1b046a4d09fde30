#include "dtrainer/dist/local_device.h"

#include <torch/cuda.h>

#include "dtrainer/core/error.h"
#include "dtrainer/dist/mpi_communicator.h"
#include "dtrainer/dist/nccl_communicator.h"

namespace dtrainer::dist {

torch::Device local_device(const MpiRuntime& rt) {
  const auto devices = static_cast<int>(torch::cuda::device_count());
  if (devices == 0) return torch::kCPU;
  if (rt.local_rank() >= devices)
    throw Error("rank " + std::to_string(rt.rank()),
                "node-local rank " + std::to_string(rt.local_rank()) + " of " + std::to_string(rt.local_world()) +
                    " has no GPU: this node has " + std::to_string(devices) +
                    "; start at most one rank per GPU, or compute on the CPU (--device cpu)");
  return {torch::kCUDA, static_cast<c10::DeviceIndex>(rt.local_rank())};
}

torch::Device select_device(const MpiRuntime& rt, const std::string& choice) {
  if (choice == "cpu") return torch::kCPU;
  if (choice != "auto" && choice != "cuda") throw Error("device", "'" + choice + "' is not one of auto, cpu, cuda");
  const torch::Device d = local_device(rt);
  if (choice == "auto" && d.is_cpu()) return d;
  if (d.is_cpu())
    throw Error("device", "cuda, but rank " + std::to_string(rt.rank()) +
                              " sees no CUDA device (this LibTorch is built without CUDA, or no GPU is visible to the rank)");
  if (!nccl_built())
    throw Error("device", std::string(d.str()) + " needs the NCCL communicator, and this dtrainer was built without NCCL "
                          "(scripts/gpu/build.sh builds it; --device cpu computes on the CPU)");
  return d;
}

std::unique_ptr<Communicator> make_communicator(const MpiRuntime& rt, const torch::Device& device) {
  if (device.is_cpu()) return make_mpi_communicator(rt.comm());
  if (device.is_cuda()) return make_nccl_communicator(rt.comm(), device.index());
  throw Error("communicator", "no backend for device " + device.str());
}

}  // namespace dtrainer::dist
