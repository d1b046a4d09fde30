#pragma once
// What a benchmark reports about the device it ran on: its name, its memory, and the peak of
// what LibTorch's caching allocator handed out. CPU devices answer with the host's view (no
// allocator statistics: 0). CUDA answers need a CUDA-enabled LibTorch; without one they throw.

#include <cstdint>
#include <string>

#include <torch/types.h>

namespace dtrainer::parallel {

std::string device_name(const torch::Device& device);
std::string device_uuid(const torch::Device& device);      // a CUDA device's UUID (32 hex digits); the CPU: "cpu"
int64_t device_total_memory(const torch::Device& device);  // bytes; 0 on the CPU
void reset_peak_device_memory(const torch::Device& device);
int64_t peak_device_memory(const torch::Device& device);  // bytes allocated at most since the reset; 0 on the CPU
// Caps a CUDA device's caching allocator at `bytes`: allocations past it fail as out-of-memory, as
// on a smaller GPU. A cap outside 1..the device's total, or a device that is not a GPU, is an Error
// naming `field` (the option that asked for the cap).
void limit_device_memory(const std::string& field, const torch::Device& device, int64_t bytes);
void synchronize_device(const torch::Device& device);  // wait for the device's queued work (no-op on the CPU)

}  // namespace dtrainer::parallel
