#include "dtrainer/train/training_stack.h"

#include <filesystem>

#include <torch/torch.h>

#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/core/log.h"
#include "dtrainer/parallel/local_device.h"
#include "dtrainer/train/checkpoint_model.h"
#include "dtrainer/train/throughput_bench.h"

namespace fs = std::filesystem;

namespace dtrainer::train {

TrainingStack build_training_stack(const TrainingStackConfig& c, const parallel::MpiRuntime& rt,
                                   const torch::Device& device) {
  if (c.sharding.compute_dtype == torch::kBFloat16 && device.is_cpu())
    log_warn(
        "compute_dtype = bf16 on the CPU: LibTorch emulates bf16 there (measured ~14x slower than fp32 on the "
        "quickstart); the compute copy is meant for GPUs");
  TrainingStack s;
  s.comm = parallel::make_communicator(rt, device);
  torch::manual_seed(c.seed);  // identical initialisation on every rank
  s.model = models::build_backbone(c.backbone);
  if (!c.init_weights.empty()) ckpt::load_weights(c.init_weights, s.model->module());
  if (!c.init_from.empty()) {  // a stage: the source's weights (its optimizer state is not taken)
    if (fs::is_regular_file(c.init_from))
      ckpt::load_weights(c.init_from, s.model->module());
    else
      ckpt::load_checkpoint_weights(resolve_checkpoint_path(c.init_from), c.init_from_weights, s.model->module());
  }
  s.model->module().to(device);  // (after the weights are read: every rank moves identical values)
  s.layout = models::parameter_layout(s.model->module(), s.model->unit_model());
  s.params = std::make_unique<parallel::ShardedParameters>(s.model->unit_model(), s.comm.get(), c.sharding);
  return s;
}

double peak_tflops_per_rank(double configured, const torch::Device& device, parallel::ComputeDtype compute_dtype) {
  if (configured > 0) return configured;
  return measure_matmul_tflops(device.str(), device.is_cuda() ? name_of(compute_dtype) : "fp32");
}

double achieved_tflops(double flops_per_sample, double samples_per_s) {
  return flops_per_sample * samples_per_s / 1e12;
}

double model_flops_utilization(double flops_per_sample, double samples_per_s, double peak_tflops_per_rank,
                               int64_t ranks) {
  return achieved_tflops(flops_per_sample, samples_per_s) / (peak_tflops_per_rank * static_cast<double>(ranks));
}

}  // namespace dtrainer::train
