#include "dtrainer/parallel/device_stats.h"

#include <torch/cuda.h>

#if DT_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "dtrainer/core/error.h"
#include "dtrainer/core/format_bytes.h"

namespace dtrainer::parallel {

#if DT_TORCH_CUDA
std::string device_name(const torch::Device& device) {
  return device.is_cpu() ? "cpu" : at::cuda::getDeviceProperties(device.index())->name;
}

std::string device_uuid(const torch::Device& device) {
  if (device.is_cpu()) return "cpu";
  const cudaUUID_t id = at::cuda::getDeviceProperties(device.index())->uuid;
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (char byte : id.bytes) {
    const auto b = static_cast<unsigned char>(byte);
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

int64_t device_total_memory(const torch::Device& device) {
  return device.is_cpu() ? 0 : static_cast<int64_t>(at::cuda::getDeviceProperties(device.index())->totalGlobalMem);
}

void reset_peak_device_memory(const torch::Device& device) {
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
}

int64_t peak_device_memory(const torch::Device& device) {
  if (device.is_cpu()) return 0;
  // [0]: StatType::AGGREGATE (the enum moved namespaces across LibTorch versions)
  return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).allocated_bytes[0].peak;
}
#else
namespace {
// A CPU-only LibTorch: the CPU answers, a CUDA device is an error.
void require_cpu(const torch::Device& device) {
  if (!device.is_cpu()) throw Error("device", device.str() + ": this build's LibTorch has no CUDA");
}
}  // namespace

std::string device_name(const torch::Device& device) { return require_cpu(device), "cpu"; }
std::string device_uuid(const torch::Device& device) { return require_cpu(device), "cpu"; }
int64_t device_total_memory(const torch::Device& device) { return require_cpu(device), 0; }
void reset_peak_device_memory(const torch::Device& device) { require_cpu(device); }
int64_t peak_device_memory(const torch::Device& device) { return require_cpu(device), 0; }
#endif

void limit_device_memory(const std::string& field, const torch::Device& device, int64_t bytes) {
  if (!device.is_cuda()) throw Error(field, "caps a GPU's allocator; this run is on " + device.str());
#if DT_TORCH_CUDA
  const int64_t total = device_total_memory(device);
  if (bytes <= 0 || bytes > total)
    throw Error(field, format_bytes(static_cast<double>(bytes)) + " is outside what " + device_name(device) + " has (" +
                           format_bytes(static_cast<double>(total)) + ")");
  c10::cuda::CUDACachingAllocator::setMemoryFraction(static_cast<double>(bytes) / static_cast<double>(total),
                                                     device.index());
#else
  (void)bytes;
  require_cpu(device);  // (throws: this LibTorch has no CUDA)
#endif
}

void synchronize_device(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

}  // namespace dtrainer::parallel
