#include "dtrainer/dist/device_stats.h"

#include <torch/cuda.h>

#if DT_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "dtrainer/core/error.h"

namespace dtrainer::dist {
namespace {

[[noreturn]] void no_cuda(const torch::Device& device) {
  throw Error("device", device.str() + ": this build's LibTorch has no CUDA");
}

}  // namespace

std::string device_name(const torch::Device& device) {
  if (device.is_cpu()) return "cpu";
#if DT_TORCH_CUDA
  return at::cuda::getDeviceProperties(device.index())->name;
#else
  no_cuda(device);
#endif
}

int64_t device_total_memory(const torch::Device& device) {
  if (device.is_cpu()) return 0;
#if DT_TORCH_CUDA
  return static_cast<int64_t>(at::cuda::getDeviceProperties(device.index())->totalGlobalMem);
#else
  no_cuda(device);
#endif
}

void reset_peak_device_memory(const torch::Device& device) {
  if (device.is_cpu()) return;
#if DT_TORCH_CUDA
  c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#else
  no_cuda(device);
#endif
}

int64_t peak_device_memory(const torch::Device& device) {
  if (device.is_cpu()) return 0;
#if DT_TORCH_CUDA
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  return stats.allocated_bytes[0].peak;  // [0]: StatType::AGGREGATE (the enum moved namespaces across LibTorch versions)
#else
  no_cuda(device);
#endif
}

void synchronize_device(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

}  // namespace dtrainer::dist
