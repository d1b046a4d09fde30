#include "dtrainer/diffusion/sampler.h"

#include <cmath>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"

namespace dtrainer::diffusion {

std::vector<int64_t> ddim_timesteps(int64_t T, int64_t steps) {
  if (steps < 1 || steps > T)
    throw Error("sampler.steps", "must be in [1, " + std::to_string(T) + "], got " + std::to_string(steps));
  std::vector<int64_t> out(steps);
  if (steps == 1) return {T - 1};
  for (int64_t i = 0; i < steps; ++i)
    out[i] = static_cast<int64_t>(std::llround(static_cast<double>(T - 1) * (steps - 1 - i) / (steps - 1)));
  return out;
}

torch::Tensor ddim_sample(const NoiseSchedule& schedule, const Denoiser& denoiser, torch::Tensor x,
                          const DdimConfig& c) {
  if (c.prediction == Target::kFlow)
    throw Error("sampler.prediction", "DDIM samples eps or v models; use Euler for flow");
  if (!(c.eta >= 0)) throw Error("sampler.eta", "must be >= 0");
  const std::vector<int64_t> ts = ddim_timesteps(schedule.size(), c.steps);
  if (c.prediction == Target::kEps && schedule.abar(ts[0]) == 0.0)
    throw Error("sampler.prediction", "an eps model cannot start at abar = 0 (zero-terminal-SNR); use v");
  const int64_t B = x.size(0);
  for (size_t i = 0; i < ts.size(); ++i) {
    const double a = schedule.abar(ts[i]);
    const double a_prev = i + 1 < ts.size() ? schedule.abar(ts[i + 1]) : 1.0;
    const torch::Tensor t_model = torch::full({B}, static_cast<double>(ts[i]), x.options().dtype(torch::kFloat32));
    const torch::Tensor pred = denoiser(x, t_model);
    torch::Tensor eps, x0;
    if (c.prediction == Target::kEps) {
      eps = pred;
      x0 = (x - std::sqrt(1 - a) * eps) / std::sqrt(a);
    } else {  // v = sqrt(a) eps - sqrt(1-a) x0
      x0 = std::sqrt(a) * x - std::sqrt(1 - a) * pred;
      eps = std::sqrt(a) * pred + std::sqrt(1 - a) * x;
    }
    // DDIM (Song et al. Eq. 12): sigma = eta sqrt((1 - a') / (1 - a)) sqrt(1 - a / a')
    const double sigma = a < 1 ? c.eta * std::sqrt((1 - a_prev) / (1 - a)) * std::sqrt(1 - a / a_prev) : 0.0;
    x = std::sqrt(a_prev) * x0 + std::sqrt(std::max(0.0, 1 - a_prev - sigma * sigma)) * eps;
    if (sigma > 0) {
      const at::Generator gen = keyed_generator(stream_key(c.seed, RngPurpose::kSampler, i, 0));
      x = x + sigma * torch::randn(x.sizes(), gen).to(x.options());
    }
  }
  return x;
}

torch::Tensor euler_flow_sample(const Denoiser& denoiser, torch::Tensor x, const EulerConfig& c) {
  if (c.steps < 1) throw Error("sampler.steps", "must be at least 1");
  const int64_t B = x.size(0);
  for (int64_t i = 0; i < c.steps; ++i) {
    const double t = 1.0 - static_cast<double>(i) / c.steps, t_next = 1.0 - static_cast<double>(i + 1) / c.steps;
    const torch::Tensor t_model = torch::full({B}, t * c.time_scale, x.options().dtype(torch::kFloat32));
    x = x + (t_next - t) * denoiser(x, t_model);
  }
  return x;
}

torch::Tensor sample_for_objective(const Objective& objective, const Denoiser& denoiser, torch::Tensor x_start,
                                   int64_t steps, uint64_t seed) {
  if (objective.config().target == Target::kFlow) {
    EulerConfig e;
    e.steps = steps;
    e.time_scale = objective.config().flow_time_scale;
    return euler_flow_sample(denoiser, std::move(x_start), e);
  }
  DdimConfig d;
  d.steps = steps;
  d.prediction = objective.config().target;
  d.seed = seed;
  return ddim_sample(objective.schedule(), denoiser, std::move(x_start), d);
}

torch::Tensor initial_noise(at::IntArrayRef shape, uint64_t seed, int64_t index) {
  return torch::randn(shape, keyed_generator(stream_key(seed, RngPurpose::kSampler, ~uint64_t{0}, index)));
}

}  // namespace dtrainer::diffusion
