#include "dtrainer/parallel/host_collectives.h"
#include "dtrainer/train/training_stack.h"
#include "dtrainer/train/throughput_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>
#include <sstream>

#include <sys/resource.h>
#include <unistd.h>

#include <mpi.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "dtrainer/core/allocator.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/parallel/compute_threads.h"
#include "dtrainer/parallel/device_stats.h"
#include "dtrainer/parallel/local_device.h"
#include "dtrainer/parallel/sharded_params.h"
#include "dtrainer/models/backbone.h"
#include "dtrainer/models/transformer_spec.h"

namespace dtrainer::train {
namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void check(const ThroughputConfig& c) {
  if (c.micro_batch < 1) throw Error("batch", "must be at least 1");
  if (c.resolution < 8 || c.resolution % 8 != 0) throw Error("resolution", "must be a positive multiple of 8 pixels");
  if (c.steps < 1) throw Error("steps", "must be at least 1");
  if (c.warmup < 0) throw Error("warmup", "must not be negative");
  if (c.repeats < 1) throw Error("repeats", "must be at least 1");
  if (c.threads < 0) throw Error("threads", "must not be negative (0: cores on the node / ranks on it)");
  if (!(c.memory_limit_gib >= 0)) throw Error("memory-limit-gib", "must not be negative");
  parallel::parse_compute_dtype("dtype", c.compute_dtype);
  if (!c.profile.empty()) {  // (before minutes of set-up: a trace that cannot be written fails now)
    const std::filesystem::path dir = std::filesystem::absolute(c.profile).parent_path();
    if (!std::filesystem::is_directory(dir) || access(dir.c_str(), W_OK) != 0)
      throw Error("profile", "cannot write " + c.profile + ": " + dir.string() + " is not a writable folder");
  }
}

// The worst of the ranks' values (a step takes as long as its slowest rank).
double max_over_ranks(double v, MPI_Comm comm) {
  return parallel::all_reduce_host(comm, {v}, parallel::HostOp::kMax)[0];
}

}  // namespace

double measure_matmul_tflops(const std::string& device_text, const std::string& dtype, int64_t n) {
  const torch::Device device(device_text);
  if (n <= 0) n = device.is_cuda() ? 8192 : 1024;
  const auto opts = torch::TensorOptions().device(device).dtype(parallel::parse_compute_dtype("dtype", dtype));
  // Several operand pairs, rotated, so that repeated products do not all hit one cached operand.
  std::vector<torch::Tensor> a, b;
  for (int i = 0; i < 3; ++i) a.push_back(torch::randn({n, n}, opts)), b.push_back(torch::randn({n, n}, opts));
  torch::Tensor out = torch::empty({n, n}, opts);
  for (int i = 0; i < 3; ++i) torch::mm_out(out, a[i], b[i]);  // warm-up (library handles, clocks)
  parallel::synchronize_device(device);
  std::vector<double> rates;
  const int per_run = device.is_cuda() ? 20 : 2;
  for (int r = 0; r < 5; ++r) {
    const double t0 = now();
    for (int i = 0; i < per_run; ++i) torch::mm_out(out, a[i % 3], b[i % 3]);
    parallel::synchronize_device(device);
    rates.push_back(2.0 * n * n * n * per_run / (now() - t0) / 1e12);
  }
  return median(rates);
}

ThroughputResult measure_training_throughput(const ThroughputConfig& c, parallel::MpiRuntime& rt) {
  check(c);
  const torch::Device device = parallel::local_device(rt);
  const int64_t threads = parallel::set_compute_threads(c.threads, rt.local_world());
  if (c.memory_limit_gib > 0)
    parallel::limit_device_memory("memory-limit-gib", device,
                                  static_cast<int64_t>(c.memory_limit_gib * 1024 * 1024 * 1024));
  // The preset's own conditioning shapes; the latent grid from the resolution (latent models: the
  // SD VAE's factor 8 and 4 channels; pixel models see the pixels).
  models::BackboneInputs inputs = models::preset_inputs(c.model);
  inputs.latent_size = inputs.latent_channels == 4 ? c.resolution / 8 : c.resolution;
  std::vector<std::string> overrides = c.model_set;
  // A class-conditional DiT benchmarks with pooled-text conditioning (the same blocks; the data
  // path carries captions, not labels).
  if (models::is_transformer_preset(c.model) && models::transformer_preset(c.model).conditioning == "class" &&
      std::none_of(overrides.begin(), overrides.end(),
                   [](const std::string& o) { return o.rfind("conditioning=", 0) == 0; }))
    overrides.push_back("conditioning=text");
  const models::BackboneSpec spec = models::resolve_backbone(c.model, overrides, inputs, false);
  if (spec.control_conditioning())
    throw Error("model", c.model + " takes [S2] control inputs, which dtbench train does not synthesise");
  const models::BackboneCost cost = models::backbone_cost(spec);

  ThroughputResult r;
  r.model = c.model;
  r.summary = models::backbone_summary(spec);
  r.ranks = rt.world();
  r.params = cost.params;
  r.micro_batch = c.micro_batch;
  r.latent_size = inputs.latent_size;
  r.flops_per_image = static_cast<double>(cost.training_flops());
  r.device = parallel::device_name(device);
  r.device_memory_bytes = parallel::device_total_memory(device);

  const torch::ScalarType dtype = parallel::parse_compute_dtype("dtype", c.compute_dtype);
  r.peak_tflops =
      peak_tflops_per_rank(c.peak_tflops, device, name_table(parallel::ComputeDtype{}).parse("dtype", c.compute_dtype));

  TrainingStackConfig sc;
  sc.backbone = spec;
  sc.seed = 1234;
  sc.sharding.strategy = parallel::parse_sharding_strategy("sharding", c.sharding);
  sc.sharding.adamw = {1e-4, 0.9, 0.999, 1e-8, 0.03};
  sc.sharding.activation_checkpointing = c.activation_checkpointing;
  sc.sharding.compute_dtype = dtype;
  TrainingStack stack = build_training_stack(sc, rt, device);
  models::Backbone* model = stack.model.get();
  parallel::ShardedParameters& params = *stack.params;
  r.backend = stack.comm->backend();

  // Synthetic inputs of the model's shapes, made once on the device (no host data path timed).
  const auto f32 = torch::TensorOptions().device(device).dtype(torch::kFloat32);
  const int64_t B = c.micro_batch, L = inputs.latent_size;
  torch::Tensor x = torch::randn({B, inputs.latent_channels, L, L}, f32);
  if (c.channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  const torch::Tensor t = torch::rand({B}, f32) * 999.0;
  const torch::Tensor text = torch::randn({B, inputs.text_len, inputs.text_dim}, f32);
  // Full-length prompts: no padding, so no mask (as the reference implementations run: a mask
  // would also rule out FlashAttention).
  const torch::Tensor mask;
  torch::Tensor target, loss;
  // On the CPU every op has finished when it returns, so the phases can be clocked without
  // changing the step (on a GPU that would add synchronisations: not clocked there).
  const bool clock_phases = device.is_cpu();
  double phase[3] = {0, 0, 0};
  auto train_step = [&] {
    const double t0 = clock_phases ? now() : 0;
    const torch::Tensor pred = model->forward(x, t, text, mask, nullptr);
    if (!target.defined()) target = torch::randn_like(pred);
    loss = (pred - target).pow(2).mean();
    const double t1 = clock_phases ? now() : 0;
    params.backward(loss);
    const double t2 = clock_phases ? now() : 0;
    params.step_async(1.0);
    if (clock_phases) phase[0] += t1 - t0, phase[1] += t2 - t1, phase[2] += now() - t2;
  };

  for (int64_t i = 0; i < c.warmup; ++i) train_step();
  parallel::synchronize_device(device);
  parallel::barrier_host(rt.comm());
  parallel::reset_peak_device_memory(device);
  std::vector<double> step_times;
  phase[0] = phase[1] = phase[2] = 0;
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  const AllocatorStats held_before = allocator_stats();
  for (int64_t rep = 0; rep < c.repeats; ++rep) {
    parallel::barrier_host(rt.comm());
    const double t0 = now();
    for (int64_t i = 0; i < c.steps; ++i) train_step();  // nothing here waits for the device
    parallel::synchronize_device(device);
    step_times.push_back(max_over_ranks((now() - t0) / static_cast<double>(c.steps), rt.comm()));
  }
  getrusage(RUSAGE_SELF, &after);
  const AllocatorStats held_after = allocator_stats();
  const double timed_steps = static_cast<double>(c.steps * c.repeats);
  r.threads = threads;
  r.forward_seconds = phase[0] / timed_steps;
  r.backward_seconds = phase[1] / timed_steps;
  r.optimizer_seconds = phase[2] / timed_steps;
  r.minor_faults_per_step = static_cast<double>(after.ru_minflt - before.ru_minflt) / timed_steps;
  const auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec);
  };
  r.system_seconds_per_step = (seconds(after.ru_stime) - seconds(before.ru_stime)) / timed_steps;
  if (held_before.allocated >= 0 && held_after.allocated >= 0) {
    r.allocated_growth_per_step = static_cast<double>(held_after.allocated - held_before.allocated) / timed_steps;
    r.resident_growth_per_step = static_cast<double>(held_after.resident - held_before.resident) / timed_steps;
  }
  r.peak_memory_bytes = parallel::peak_device_memory(device);
  if (!c.profile.empty()) {
    // One more step under LibTorch's profiler, after the timed ones (it slows each op down): every
    // op's time, forward and backward, as a Chrome trace (rank 0; bench/peer/op_table.py sums it).
    parallel::synchronize_device(device);
    std::ostringstream trace;
    {
      std::optional<torch::autograd::profiler::RecordProfile> profiling;  // (writes the trace when it ends)
      if (rt.rank() == 0) profiling.emplace(trace);
      train_step();
      parallel::synchronize_device(device);
    }
    if (rt.rank() == 0) write_file_atomic(c.profile, trace.str());
  }
  r.final_loss = loss.item<double>();
  r.step_seconds = median(step_times);
  r.images_per_second = static_cast<double>(B * rt.world()) / r.step_seconds;
  r.tflops_per_rank = achieved_tflops(r.flops_per_image, static_cast<double>(B) / r.step_seconds);
  r.mfu = model_flops_utilization(r.flops_per_image, static_cast<double>(B) / r.step_seconds, r.peak_tflops, 1);
  return r;
}

}  // namespace dtrainer::train
