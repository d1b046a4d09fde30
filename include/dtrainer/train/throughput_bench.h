#pragma once
// Training throughput of one backbone on each rank's device: forward, backward and the optimizer
// step through the real sharding path (ShardedParameters, fused AdamW), on synthetic inputs of the
// preset's shapes at a given resolution — what `dtbench train` prints. The step loop never waits
// for the device (step_async); the clock is read after synchronising only around whole runs of
// steps. MFU is taken against the device's measured dense matmul rate in the compute dtype.

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/parallel/mpi_runtime.h"

namespace dtrainer::train {

struct ThroughputConfig {
  std::string model = "sdxl-c128";     // a preset (dtmodel list)
  std::vector<std::string> model_set;  // key=value overrides
  int64_t micro_batch = 8;             // images per rank per step
  int64_t resolution = 256;            // pixels; latent models see resolution / 8 (SD VAE, 4 channels)
  int64_t steps = 10;                  // timed steps per repeat
  int64_t warmup = 3;                  // untimed steps first (cuDNN/cuBLAS autotuning, allocator growth)
  int64_t repeats = 3;                 // runs of `steps`; the median run is reported
  std::string sharding = "replicate";  // replicate | zero1 | zero2 | zero3
  bool activation_checkpointing = false;
  std::string compute_dtype = "bf16";  // bf16 | fp32
  bool channels_last = false;          // UNets: NHWC activations (cuDNN's fast layout in bf16)
  double peak_tflops = 0;              // > 0: use this peak instead of measuring one
  double memory_limit_gib = 0;         // > 0: cap each GPU's allocator there (a smaller GPU's memory)
  int64_t threads = 0;                 // CPU compute threads per rank (0: cores on the node / ranks on it)
  std::string profile;                 // not empty: one more step under LibTorch's profiler, its trace here
};

struct ThroughputResult {
  std::string model, device, backend, summary;
  int ranks = 1;
  int64_t params = 0, micro_batch = 0, latent_size = 0;
  double flops_per_image = 0;     // forward + backward: 3 x 2 x (linear/conv + attention MACs); recompute not counted
  double step_seconds = 0;        // median over repeats of the mean step time
  double images_per_second = 0;   // all ranks
  double tflops_per_rank = 0;     // achieved model FLOP/s per device
  double peak_tflops = 0;         // measured dense matmul rate of one device in the compute dtype
  double mfu = 0;                 // tflops_per_rank / peak_tflops
  int64_t peak_memory_bytes = 0;  // allocator peak on rank 0's device during the timed steps (0 on the CPU)
  int64_t device_memory_bytes = 0;
  double final_loss = 0;  // last step's loss (read once at the end): finite for a sane run
  int64_t threads = 0;    // compute threads per rank
  // Rank 0's process during the timed steps, per step (getrusage): page faults that the kernel served
  // without I/O (fresh or reclaimed pages: an allocator returning memory shows here) and kernel time.
  double minor_faults_per_step = 0;
  double system_seconds_per_step = 0;
  // The allocator's counters (core/allocator.h) across the timed steps, bytes per step; 0 when the
  // allocator has none. Both near 0 in a steady state.
  double allocated_growth_per_step = 0, resident_growth_per_step = 0;
  // CPU only (0 on a GPU, where clocking them would add synchronisations): mean seconds per step of
  // the forward and loss, the backward (gradients packed and reduced) and the optimizer step.
  double forward_seconds = 0, backward_seconds = 0, optimizer_seconds = 0;
};

// Dense n x n x n matmul rate of `device` in `dtype` (bf16 | fp32), TFLOP/s: the median of
// several timed runs after a warm-up, on random data.
// n = 0: 8192 on a GPU, 1024 on the CPU (large enough to reach each one's rate, short there).
double measure_matmul_tflops(const std::string& device, const std::string& dtype, int64_t n = 0);

// Collective over the runtime's ranks (one device each). Throws Error naming the field on bad input.
ThroughputResult measure_training_throughput(const ThroughputConfig& config, parallel::MpiRuntime& rt);

}  // namespace dtrainer::train
