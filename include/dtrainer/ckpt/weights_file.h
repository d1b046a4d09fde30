#pragma once
// A checkpoint's weights as one safetensors file, named after the model's parameters (for the
// UNets: diffusers' UNet2DConditionModel names), and back: a weights file as the starting point of
// a new run. The checkpoint's parameter layout (ckpt/checkpoint.h) names the tensors, so export
// needs no model, reads one unit at a time, and works for any size of model.

#include <cstdint>
#include <functional>
#include <string>

#include <torch/types.h>

namespace torch::nn {
class Module;
}

#include "dtrainer/ckpt/weights_source.h"

namespace dtrainer::ckpt {

struct ExportOptions {
  WeightsSource source = WeightsSource::kAuto;
  torch::ScalarType dtype = torch::kFloat32;  // F32, BF16 or F16 in the file
};

struct ExportSummary {
  std::string source;  // "params", "ema" or "phema_SIGMA"
  int64_t step = 0, tensors = 0, elements = 0, bytes = 0;
};

// Writes `out` from the complete checkpoint `checkpoint_dir` (atomically: no file on failure).
// The file's __metadata__ records the source checkpoint, step, weights and the run's config.
ExportSummary export_weights(const std::string& checkpoint_dir, const std::string& out, const ExportOptions& options);

// Copies the tensors of weights file `path` into `module`'s parameters (converted to their dtype).
// The names and shapes must match the module's parameters exactly — a missing, unexpected or
// misshapen tensor is an error naming it — and nothing is changed unless all of them match.
// Copies a checkpoint's weights (EMA or trained, as `source` chooses; auto: EMA when kept) into
// `module`, whose parameters must be exactly the checkpoint's (names and shapes); returns the kind
// taken ("ema" | "params"). Throws Error naming the checkpoint and the first tensor that differs.
std::string load_checkpoint_weights(const std::string& checkpoint_dir, WeightsSource source, torch::nn::Module& module);

// Whether a weights file can start a run at all, without a model: well-formed, every floating
// tensor finite. Throws Error naming the file and the first bad tensor.
void check_weights_file(const std::string& path);

// How a weights file written by another program names the module's tensors.
struct WeightsNaming {
  // The module's parameter name of the file's tensor `name`; "" = a tensor the module does not use,
  // skipped (e.g. the vision tower of a whole CLIP file). Unset: the same name, nothing skipped.
  std::function<std::string(const std::string& name)> module_name;
};

void load_weights(const std::string& path, torch::nn::Module& module, const WeightsNaming& naming = {});

}  // namespace dtrainer::ckpt
