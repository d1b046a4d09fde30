#include "dtrainer/train/step_window.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/log.h"
#include "dtrainer/parallel/device_stats.h"
#include "dtrainer/core/format_duration.h"
#include "dtrainer/parallel/host_collectives.h"
#include "dtrainer/train/training_stack.h"

namespace dtrainer::train {

void StepWindow::add(PendingStep step, double seconds, double data_wait_s) {
  pending_.push_back(std::move(step));
  time_ += seconds;
  data_wait_ += data_wait_s;
  ++steps_;
}

void StepWindow::resolve(int64_t max_bad_steps, const LrSchedule& lr, int64_t& bad_steps) {
  if (pending_.empty()) return;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> figures;
  for (const auto& p : pending_) {
    figures.push_back(p.loss.to(torch::kFloat64).reshape({1}));
    figures.push_back(p.grad_norm.to(torch::kFloat64).reshape({1}));
  }
  const torch::Tensor host = torch::cat(figures).cpu();
  time_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<PendingStep> steps = std::move(pending_);
  pending_.clear();
  const double* v = host.data_ptr<double>();
  for (size_t i = 0; i < steps.size(); ++i) {
    const int64_t step = steps[i].step;
    const double loss = v[2 * i], grad_norm = v[2 * i + 1];
    last_grad_norm_ = grad_norm;
    if (std::isfinite(loss) && std::isfinite(grad_norm)) {
      bad_in_a_row_ = 0;
      loss_ += loss;
      ++finite_;
      continue;
    }
    ++bad_steps;
    if (++bad_in_a_row_ >= max_bad_steps)
      throw Error("training", std::to_string(bad_in_a_row_) +
                                  " consecutive steps with a non-finite loss or gradient (step " +
                                  std::to_string(step) + ": loss " + std::to_string(loss) + ", grad norm " +
                                  std::to_string(grad_norm) + ", lr " + std::to_string(lr.at(step)) +
                                  "); lower lr or check the data (dtdata validate)");
    log_warn("step " + std::to_string(step) + ": non-finite loss or gradient, update skipped (" +
             std::to_string(bad_in_a_row_) + " in a row)");
  }
}

WindowFigures StepWindow::close(MPI_Comm comm, const torch::Device& device) {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const parallel::NamedFigures worst = parallel::NamedFigures{
      {"time", time_},
      {"data_wait", data_wait_},
      {"memory", ru.ru_maxrss * 1024.0},
      {"device_memory", static_cast<double>(parallel::peak_device_memory(
                            device))}}.reduced(comm, parallel::HostOp::kMax);
  WindowFigures f;
  f.steps = steps_;
  f.step_time_s = worst["time"] / static_cast<double>(steps_);
  f.data_wait_s = worst["data_wait"] / static_cast<double>(steps_);
  f.mean_loss = finite_ ? loss_ / static_cast<double>(finite_) : std::nan("");
  f.grad_norm = last_grad_norm_;
  f.max_memory_bytes = worst["memory"];
  f.max_device_memory_bytes = worst["device_memory"];
  time_ = data_wait_ = loss_ = 0;
  steps_ = finite_ = 0;
  return f;
}

WindowReport report_window(const WindowFigures& w, const WindowContext& c) {
  const double sps = static_cast<double>(c.global_batch) / w.step_time_s;
  const double mfu = model_flops_utilization(c.flops_per_sample, sps, c.peak_tflops_per_rank, c.ranks);
  WindowReport r;
  r.record = {{"loss", w.mean_loss},  // (NaN, written as null, when every step of the window was skipped)
              {"lr", c.lr},
              {"grad_norm", w.grad_norm},
              {"step_time_s", w.step_time_s},
              {"data_wait_s", w.data_wait_s},
              {"samples_per_s", sps},
              {"tflops_per_s", achieved_tflops(c.flops_per_sample, sps)},
              {"mfu", mfu},
              {"max_memory_bytes", w.max_memory_bytes},
              {"bad_steps", c.bad_steps},
              {"skipped_samples", c.skipped_samples}};
  if (c.cuda) r.record["max_device_memory_bytes"] = w.max_device_memory_bytes;  // the busiest rank's GPU peak
  char line[256];
  std::snprintf(line, sizeof line, "step %lld/%lld | loss %.4f | lr %.2e | %.1f img/s | MFU %.1f%% | ETA %s",
                static_cast<long long>(c.step), static_cast<long long>(c.last_step), w.mean_loss, c.lr, sps, 100 * mfu,
                format_duration(c.eta_s).c_str());
  r.line = line;
  return r;
}

}  // namespace dtrainer::train
