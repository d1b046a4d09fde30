#pragma once
// One micro-batch of a training step, ready for the model: rows [k * micro, (k + 1) * micro) of
// this rank's batch, noised by the objective (noise and dropout keyed per sample, so every rank
// count draws the same), caption dropout applied with the null text, [S2]'s controls assembled,
// and the model's inputs moved to the compute device (without waiting for it).

#include <cstdint>
#include <optional>

#include <torch/types.h>

#include "dtrainer/data/loader.h"
#include "dtrainer/diffusion/objective.h"
#include "dtrainer/models/control_embedding.h"

namespace dtrainer::train {

struct MicroBatchSetup {
  int64_t micro = 1;       // rows per micro-batch
  bool drop_text = false;  // p_drop_text > 0: the objective's keep_text flags apply
  bool control = false;    // the backbone takes [S2] control inputs
  torch::Device device = torch::kCPU;
  // MDT's masked training (models/token_mask.h): the fraction of image tokens hidden (0: none), of `tokens`.
  double token_mask_ratio = 0;
  int64_t tokens = 0;
  uint64_t seed = 0;
};

struct MicroBatch {
  diffusion::NoisedBatch noised;  // x_t, t_model, target, weight on the device; the rest on the host
  torch::Tensor text, mask;       // on the device (mask undefined when every token is real)
  std::optional<models::ControlInputs> controls;
  torch::Tensor token_keep;  // MDT: the kept image tokens [micro, n] on the device (undefined: no masked forward)
  const models::ControlInputs* controls_or_null() const { return controls ? &*controls : nullptr; }
};

// Micro-batch `k` of `batch` for optimizer step `step` (1-based; the objective's draws are keyed
// by step - 1).
MicroBatch make_micro_batch(const data::Batch& batch, int64_t k, int64_t step, const diffusion::Objective& objective,
                            const MicroBatchSetup& setup);

}  // namespace dtrainer::train
