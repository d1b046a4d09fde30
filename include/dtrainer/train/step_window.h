#pragma once
// The steps since the last metrics record. Each step's loss (averaged over ranks) and global
// gradient norm stay on the compute device until resolve() reads them back, a window at a time
// on a GPU, so the step loop never waits for the device; on the CPU every step is resolved at
// once. A non-finite step is counted and reported; max_bad_steps of them in a row end the run.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <mpi.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "dtrainer/train/lr_schedule.h"

namespace dtrainer::train {

// A step's figures on the compute device, one element each.
struct PendingStep {
  int64_t step = 0;
  torch::Tensor loss, grad_norm;
};

// The window over ranks: the slowest rank's time and memory.
struct WindowFigures {
  int64_t steps = 0;
  double step_time_s = 0, data_wait_s = 0;
  double mean_loss = std::nan("");  // over the window's finite steps (NaN when all were skipped)
  double grad_norm = std::nan("");  // the last step's
  double max_memory_bytes = 0, max_device_memory_bytes = 0;
};

// What a closed window reports: the fields of its metrics record (the caller adds the axes) and
// the progress line. `eta_s`: the estimated time to the last step.
struct WindowContext {
  int64_t step = 0, last_step = 0, global_batch = 0, ranks = 1;
  double lr = 0, flops_per_sample = 0, peak_tflops_per_rank = 0, eta_s = 0;
  int64_t bad_steps = 0, skipped_samples = 0;
  bool cuda = false;  // the record gets the GPU allocator's peak too
};
struct WindowReport {
  nlohmann::json record;
  std::string line;
};
WindowReport report_window(const WindowFigures& w, const WindowContext& c);

class StepWindow {
 public:
  void add(PendingStep step, double seconds, double data_wait_s);
  // Reads the pending figures back (the wait counts as training time) and books them in order.
  // Adds the bad ones to `bad_steps`; throws Error("training") at `max_bad_steps` in a row.
  void resolve(int64_t max_bad_steps, const LrSchedule& lr, int64_t& bad_steps);
  // Collective: the window's figures over the ranks (after resolve), then a new window begins.
  WindowFigures close(MPI_Comm comm, const torch::Device& device);

 private:
  std::vector<PendingStep> pending_;  // stepped, not yet read back
  double time_ = 0, data_wait_ = 0, loss_ = 0, last_grad_norm_ = std::nan("");
  int64_t steps_ = 0, finite_ = 0, bad_in_a_row_ = 0;
};

}  // namespace dtrainer::train
