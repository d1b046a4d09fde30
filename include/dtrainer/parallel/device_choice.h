#pragma once
// Where a rank computes, as configured (parallel/local_device.h resolves it to a device), torch-free.

#include "dtrainer/core/name_table.h"

namespace dtrainer::parallel {

enum class DeviceChoice {
  kAuto,  // a GPU (cuda:<node-local rank>) where LibTorch sees GPUs, else the CPU
  kCpu,
  kCuda,  // a GPU, or an error naming the rank
};
const NameTable<DeviceChoice>& name_table(DeviceChoice);  // auto | cpu | cuda

}  // namespace dtrainer::parallel
