#include "dtrainer/parallel/local_device.h"

#include <algorithm>
#include <vector>

#include <torch/cuda.h>

#include "dtrainer/core/error.h"
#include "dtrainer/parallel/device_stats.h"
#include "dtrainer/parallel/mpi_communicator.h"
#include "dtrainer/parallel/nccl_communicator.h"

namespace dtrainer::parallel {

namespace {

// Ranks bound to one GPU each see it as cuda:0; two of them seeing the same physical GPU (one
// GPU, several ranks) is an error on both. A collective over the node's ranks.
void check_own_gpu(const MpiRuntime& rt, const torch::Device& device) {
  constexpr int kLen = 33;  // 32 hex digits and a terminator
  char mine[kLen] = {};
  const std::string uuid = device_uuid(device);
  uuid.copy(mine, kLen - 1);
  std::vector<char> all(static_cast<size_t>(rt.local_world()) * kLen, 0);
  MPI_Allgather(mine, kLen, MPI_CHAR, all.data(), kLen, MPI_CHAR, rt.node_comm());
  for (int r = 0; r < rt.local_world(); ++r)
    if (r != rt.local_rank() && std::string(&all[static_cast<size_t>(r) * kLen]) == uuid)
      throw Error("rank " + std::to_string(rt.rank()),
                  "node-local ranks " + std::to_string(std::min(r, rt.local_rank())) + " and " +
                      std::to_string(std::max(r, rt.local_rank())) + " see one and the same GPU (" + uuid +
                      "); start at most one rank per GPU, or compute on the CPU (--device cpu)");
}

}  // namespace

torch::Device local_device(const MpiRuntime& rt) {
  const auto devices = static_cast<int>(torch::cuda::device_count());
  if (devices == 0) return torch::kCPU;
  // Every rank sees all of the node's GPUs (mpirun, Slurm --gpus-per-node): rank r takes GPU r.
  if (devices >= rt.local_world()) return {torch::kCUDA, static_cast<c10::DeviceIndex>(rt.local_rank())};
  // Every rank sees one GPU (Slurm --gpus-per-task=1, or CUDA_VISIBLE_DEVICES set per rank): its own.
  if (devices == 1) {
    const torch::Device own(torch::kCUDA, 0);
    check_own_gpu(rt, own);
    return own;
  }
  throw Error("rank " + std::to_string(rt.rank()),
              "node-local rank " + std::to_string(rt.local_rank()) + " of " + std::to_string(rt.local_world()) +
                  " has no GPU of its own: it sees " + std::to_string(devices) +
                  "; start at most one rank per GPU, or compute on the CPU (--device cpu)");
}

const NameTable<DeviceChoice>& name_table(DeviceChoice) {
  static const NameTable<DeviceChoice> t{
      {"auto", DeviceChoice::kAuto}, {"cpu", DeviceChoice::kCpu}, {"cuda", DeviceChoice::kCuda}};
  return t;
}

torch::Device select_device(const MpiRuntime& rt, const std::string& choice) {
  return select_device(rt, name_table(DeviceChoice{}).parse("device", choice));
}

torch::Device select_device(const MpiRuntime& rt, DeviceChoice choice) {
  if (choice == DeviceChoice::kCpu) return torch::kCPU;
  const torch::Device d = local_device(rt);
  if (choice == DeviceChoice::kAuto && d.is_cpu()) return d;
  if (d.is_cpu())
    throw Error("device",
                "cuda, but rank " + std::to_string(rt.rank()) +
                    " sees no CUDA device (this LibTorch is built without CUDA, or no GPU is visible to the rank)");
  if (!nccl_built())
    throw Error("device", std::string(d.str()) +
                              " needs the NCCL communicator, and this dtrainer was built without NCCL "
                              "(scripts/gpu/build.sh builds it; --device cpu computes on the CPU)");
  return d;
}

std::unique_ptr<Communicator> make_communicator(const MpiRuntime& rt, const torch::Device& device) {
  if (device.is_cpu()) return make_mpi_communicator(rt.comm());
  if (device.is_cuda()) return make_nccl_communicator(rt.comm(), device.index());
  throw Error("communicator", "no backend for device " + device.str());
}

}  // namespace dtrainer::parallel
