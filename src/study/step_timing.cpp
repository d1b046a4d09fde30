#include "dtrainer/study/step_timing.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/backbone.h"
#include "dtrainer/parallel/compute_threads.h"

namespace dtrainer::study {
namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// The median of `repeats` timings of f after `warmup` untimed calls (allocator growth, first-call setup).
template <typename F>
double median_seconds(int warmup, int repeats, F&& f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const double t0 = now();
    f();
    t.push_back(now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

StepTiming time_training_step(const models::BackboneSpec& spec, int64_t micro, int64_t accumulation, int64_t threads) {
  if (spec.control_conditioning())
    throw Error("model", "takes [S2] control inputs, which the step timing does not synthesise");
  parallel::set_compute_threads(threads, 1);
  torch::manual_seed(0);
  std::unique_ptr<models::Backbone> model = models::build_backbone(spec);
  const models::BackboneInputs& in = spec.inputs;
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  const torch::Tensor x = torch::randn({micro, in.latent_channels, in.latent_size, in.latent_size}, f32);
  const torch::Tensor t = torch::rand({micro}, f32) * 999.0;
  const torch::Tensor text = torch::randn({micro, in.text_len, in.text_dim}, f32);
  const torch::Tensor mask;
  StepTiming r;
  r.step_seconds = static_cast<double>(accumulation) * median_seconds(3, 5, [&] {
                     model->module().zero_grad();
                     model->forward(x, t, text, mask, nullptr).pow(2).mean().backward();
                   });
  {
    torch::NoGradGuard no_grad;
    r.forward_seconds_per_image =
        median_seconds(1, 3, [&] { model->forward(x, t, text, mask, nullptr); }) / static_cast<double>(micro);
  }
  return r;
}

}  // namespace dtrainer::study
