#pragma once
// Sampling images from a backbone with classifier-free guidance, from given starting noise (the
// sampler the objective calls for: diffusion::sample_for_objective). One implementation for the trainer's sample grids,
// its alignment evaluations and dteval, so they all draw the same images from the same weights.

#include <array>
#include <cstdint>

#include <torch/types.h>

#include "dtrainer/diffusion/objective.h"
#include "dtrainer/models/backbone.h"

namespace dtrainer::train {

// A host tensor on the compute device. To a GPU through pinned memory, without waiting: the copy
// is queued behind the work already on the current stream.
torch::Tensor to_device(const torch::Tensor& t, const torch::Device& device);
// The parts of a noised batch the model and the loss read on the device (x_t, t_model; target,
// weight); the rest (t_unit, snr, the dropout flags) is used on the host and stays there.
diffusion::NoisedBatch to_device(diffusion::NoisedBatch b, const torch::Device& device);

// The backbone on device tensors, the latents laid out as configured (channels_last: NHWC, which
// convolutions keep, so it carries through the UNet).
torch::Tensor forward_backbone(models::Backbone& model, bool channels_last, const torch::Tensor& x,
                               const torch::Tensor& t, const torch::Tensor& text, const torch::Tensor& mask,
                               const models::ControlInputs* controls);

// The mask the model gets: none when every token is real (attention then takes its fastest
// kernel), else the mask on `device`.
torch::Tensor attention_mask(const torch::Tensor& host_mask, const torch::Device& device);

struct SamplerSetup {
  models::Backbone* model = nullptr;
  const diffusion::Objective* objective = nullptr;  // schedule and target
  torch::Device device = torch::kCPU;
  bool channels_last = false;
  int64_t steps = 50;
  double guidance = 3.0;
  uint64_t seed = 0;  // (the DDIM noise when eta > 0)
  // [S2] control conditioning: the model takes controls, and with them samples an uncropped,
  // unflipped image of `original_size` (height, width in pixels); control_beta is Eq. 2's beta
  // (1: plain classifier-free guidance against eps(null, null)).
  bool controls = false;
  double control_beta = 1.0;
  std::array<double, 2> original_size{0, 0};
};

// x_start [B, C, H, W] (host), text [B, T, D] and mask [B, T] (host): the sampled x_0 on the host.
torch::Tensor sample_images(const SamplerSetup& s, const torch::Tensor& x_start, const torch::Tensor& text,
                            const torch::Tensor& mask);

}  // namespace dtrainer::train
