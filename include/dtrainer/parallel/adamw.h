#pragma once
// The optimizer update on flat fp32 shards (what each rank owns under zero1-3, or the whole
// model under replicate): AdamW with decoupled weight decay (PyTorch semantics) as one fused
// pass — param, grad, m, v read once; param, m, v (and an optional bf16 compute copy) written once.
// Host tensors run a loop in chunks on LibTorch's intra-op pool (at::parallel_for: the rank's
// compute threads); CUDA tensors run the same update as torch ops.

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "dtrainer/parallel/communicator.h"

namespace dtrainer::parallel {

struct AdamWConfig {
  double lr = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;  // [S2]: 0.95
  double eps = 1e-8;
  double weight_decay = 0;  // [S2]: 0.03
};

// A weight average the update carries along: avg <- decay avg + (1 - decay) param (after the update).
struct WeightAverage {
  torch::Tensor avg;  // flat fp32, like param
  double decay = 0;
};

// One step (step counts from 1). grad_scale multiplies the gradient first (global-norm clipping,
// 1 / accumulation steps). bf16_copy, when defined, receives the updated params in bf16. Each of
// `averages` then follows the updated params (a vectorised pass each: measured as fast on the CPU
// as carrying them in the update's loop; bench/RESULTS.md).
// All tensors flat, same length, contiguous, fp32 (bf16_copy: bf16). Throws Error on mismatch.
void adamw_step(torch::Tensor param, const torch::Tensor& grad, torch::Tensor m, torch::Tensor v, int64_t step,
                const AdamWConfig& config, double grad_scale = 1.0, torch::Tensor bf16_copy = torch::Tensor(),
                const std::vector<WeightAverage>& averages = {});

// The same update for many flat shards on one CUDA device, without waiting for it: one
// multi-tensor kernel (PyTorch's fused AdamW). grad_divisor (a one-element fp32 tensor on the
// device) divides every gradient first; where skip (likewise) is non-zero the update leaves
// everything unchanged on the device itself, so a non-finite gradient norm needs no host read.
// step_count (one fp32 element on the device) counts the updates made: it advances by 1 - skip.
// Needs LibTorch >= 2.1 (an Error otherwise).
// bf16_copies, when not empty, receive the updated params (one per shard).
void adamw_step_on_device(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
                          const std::vector<torch::Tensor>& m, const std::vector<torch::Tensor>& v,
                          torch::Tensor step_count, const AdamWConfig& config, const torch::Tensor& grad_divisor,
                          const torch::Tensor& skip, const std::vector<torch::Tensor>& bf16_copies);

// ema = decay * ema + (1 - decay) * param, on flat fp32 shards (a pass of its own).
void ema_update(torch::Tensor ema, const torch::Tensor& param, double decay);

// sqrt of the sum of squares of every rank's gradient shards (an all-reduce of one number).
double global_grad_norm(const std::vector<torch::Tensor>& local_grads, Communicator* comm);
// The same on the device, as a one-element fp32 tensor there (no host synchronisation).
torch::Tensor global_grad_norm_on_device(const std::vector<torch::Tensor>& local_grads, Communicator* comm);
// The factor that clips to max_norm: min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0.
double clip_factor(double norm, double max_norm);

}  // namespace dtrainer::parallel
