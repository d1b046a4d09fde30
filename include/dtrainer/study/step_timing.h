#pragma once
// A training step of one backbone timed on this machine, for a study's time estimates: forward
// and backward of one micro-batch (times the accumulation), and a forward pass per image without
// gradients (what sampling costs). One process, `threads` compute threads (a rank's share of the
// cores), synthetic inputs of the backbone's shapes; the optimizer and the gradient reduction are
// not timed (small at the sizes a single machine trains). A guide, not a benchmark: dtbench
// measures throughput properly.

#include <cstdint>

#include "dtrainer/models/backbone_spec.h"

namespace dtrainer::study {

struct StepTiming {
  double step_seconds = 0;               // forward + backward of micro x accumulation samples
  double forward_seconds_per_image = 0;  // no-grad forward, per image, at batch `micro`
};

// Throws Error("model", ...) for backbones with [S2] control inputs (no synthetic controls here).
StepTiming time_training_step(const models::BackboneSpec& spec, int64_t micro, int64_t accumulation, int64_t threads);

}  // namespace dtrainer::study
