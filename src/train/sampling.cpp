#include "dtrainer/train/sampling.h"

#include <algorithm>
#include <optional>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/diffusion/conditioning.h"
#include "dtrainer/diffusion/guidance.h"
#include "dtrainer/diffusion/sampler.h"

namespace dtrainer::train {
torch::Tensor to_device(const torch::Tensor& t, const torch::Device& device) {
  if (!t.defined() || t.device() == device) return t;
  if (device.is_cuda() && t.is_cpu()) return t.pin_memory().to(device, /*non_blocking=*/true);
  return t.to(device);
}

diffusion::NoisedBatch to_device(diffusion::NoisedBatch b, const torch::Device& device) {
  for (torch::Tensor* t : {&b.x_t, &b.target, &b.weight, &b.t_model}) *t = to_device(*t, device);
  return b;
}

torch::Tensor forward_backbone(models::Backbone& model, bool channels_last, const torch::Tensor& x,
                               const torch::Tensor& t, const torch::Tensor& text, const torch::Tensor& mask,
                               const models::ControlInputs* controls) {
  const torch::Tensor input = channels_last ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
  return model.forward(input, t, text, mask, controls);
}

torch::Tensor attention_mask(const torch::Tensor& host_mask, const torch::Device& device) {
  return host_mask.all().item<bool>() ? torch::Tensor() : to_device(host_mask, device);
}

torch::Tensor sample_images(const SamplerSetup& s, const torch::Tensor& x_start, const torch::Tensor& text,
                            const torch::Tensor& mask) {
  if (!s.model || !s.objective) throw Error("sample_images", "needs a model and an objective");
  torch::NoGradGuard no_grad;
  const int64_t n = x_start.size(0);
  const auto [null_t, null_m] = diffusion::null_text(n, text.size(1), text.size(2));
  const torch::Tensor nt = to_device(null_t, s.device), nm = attention_mask(null_m, s.device);
  const torch::Tensor tx = to_device(text, s.device), tm = attention_mask(mask, s.device);
  if (s.control_beta != 1.0 && !s.controls)
    throw Error("control_guidance", "needs a model with [S2] control conditioning (control_conditioning, mmdit_pp)");
  // The controls of an uncropped, unflipped image of the data's size; gamma_c(t) from the step's unit time.
  const bool flow = s.objective->config().target == diffusion::Target::kFlow;
  const double to_unit = flow ? 1.0 / s.objective->config().flow_time_scale
                              : 1.0 / static_cast<double>(s.objective->schedule().size() - 1);
  const auto [oh, ow] = s.original_size;
  const torch::Tensor high = torch::tensor({0.0, 0.0, 0.0, ow / std::max(oh, 1.0)}, torch::kFloat32).repeat({n, 1});
  const torch::Tensor low = torch::tensor({oh, ow}, torch::kFloat32).repeat({n, 1});
  diffusion::ConditionalModel cond = [&](const torch::Tensor& x, const torch::Tensor& t, bool with_text,
                                         bool with_control) {
    const torch::Tensor tt = t.dim() == 0 ? t.expand({x.size(0)}) : t;
    std::optional<models::ControlInputs> ctl;
    if (s.controls)
      ctl = models::ControlInputs{
          to_device(high, s.device), to_device(low, s.device),
          to_device(diffusion::control_low_weight(tt.to(torch::kCPU, torch::kFloat64) * to_unit), s.device),
          to_device(torch::full({x.size(0)}, with_control, torch::kBool), s.device)};
    return forward_backbone(*s.model, s.channels_last, x, tt.to(torch::kFloat32), with_text ? tx : nt,
                            with_text ? tm : nm, ctl ? &*ctl : nullptr);
  };
  diffusion::GuidanceConfig g;
  g.scale = s.guidance;
  g.control_beta = s.control_beta;
  const diffusion::Denoiser denoiser = diffusion::guided_denoiser(cond, g);
  return diffusion::sample_for_objective(*s.objective, denoiser, to_device(x_start, s.device), s.steps, s.seed).cpu();
}

}  // namespace dtrainer::train
