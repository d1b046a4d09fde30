// dtbench — performance benchmarks.
//
//   mpirun -n 2 dtbench comm [--json] [--backend mpi|nccl] [--min-bytes B] [--max-bytes B] [--iters N]
//       each collective from 1 KiB to 256 MiB (fp32), in the style of nccl-tests: time, algorithm
//       bandwidth and bus bandwidth through dtrainer's Communicator and through the raw MPI call
//       on the same buffers. --backend nccl: the NCCL backend on each rank's GPU (one rank per
//       GPU); the raw-MPI column is left out there (Debian's Open MPI cannot read GPU memory).
//   dtbench optim [--json] [--elements N] [--threads T]
//       the fused AdamW update's effective GB/s (on T threads of LibTorch's pool) next to a memcpy
//       moving the same bytes on one thread.
//   [mpirun -n G] dtbench train --model NAME --batch B [--resolution 256] [--sharding S]
//       [--activation-checkpointing] [--dtype bf16|fp32] [--channels-last] [--memory-limit-gib G] [--json]
//       forward + backward + optimizer steps of a preset on each rank's device (GPU when LibTorch
//       sees one), through the trainer's sharding and fused AdamW: img/s, TFLOP/s per device, and
//       MFU against the device's measured matmul peak in the compute dtype (also printed).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/core/allocator.h"
#include "dtrainer/core/blas_kernels.h"
#include "dtrainer/parallel/sharding_strategy.h"
#include "dtrainer/core/error.h"
#include "dtrainer/parallel/adamw.h"
#include "dtrainer/parallel/local_device.h"
#include "dtrainer/parallel/mpi_communicator.h"
#include "dtrainer/parallel/mpi_runtime.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/train/throughput_bench.h"

using namespace dtrainer;
using namespace dtrainer::parallel;
using nlohmann::ordered_json;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Seconds of one run of f, synchronised across ranks: a collective takes as long as its slowest rank.
template <typename F>
double time_once(MPI_Comm comm, F&& f) {
  MPI_Barrier(comm);
  const double t0 = now();
  f();
  double dt = now() - t0, worst = 0;
  MPI_Allreduce(&dt, &worst, 1, MPI_DOUBLE, MPI_MAX, comm);
  return worst;
}

double median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median seconds of `iters` runs of each of a and b (after 2 warm-up runs of each). The runs
// interleave, alternating which goes first, so a drift in the machine's load (2 ranks sharing
// 2 busy cores) lands on both columns alike instead of on whichever block ran during it.
template <typename A, typename B>
std::pair<double, double> time_pair(MPI_Comm comm, int iters, A&& a, B&& b) {
  for (int i = 0; i < 2; ++i) a(), b();
  std::vector<double> ta, tb;
  for (int i = 0; i < iters; ++i) {
    if (i % 2 == 0)
      ta.push_back(time_once(comm, a)), tb.push_back(time_once(comm, b));
    else
      tb.push_back(time_once(comm, b)), ta.push_back(time_once(comm, a));
  }
  return {median(ta), median(tb)};
}

int run_comm(MpiRuntime& rt, bool json, const std::string& backend, int64_t min_bytes, int64_t max_bytes, int iters) {
  torch::Device device = torch::kCPU;
  if (backend == "nccl") {
    device = local_device(rt);
    if (!device.is_cuda())
      throw Error("--backend nccl", "LibTorch sees no CUDA device on rank " + std::to_string(rt.rank()));
  }
  auto comm = make_communicator(rt, device);
  const bool gpu = device.is_cuda();
  const int W = rt.world();
  ordered_json rows = ordered_json::array();
  if (!json && rt.rank() == 0)
    std::printf(
        "# dtbench comm: %d ranks, %s backend, fp32, median of %d interleaved runs; algbw = bytes / time; busbw as "
        "nccl-tests "
        "(allreduce x 2(n-1)/n, reduce_scatter/all_gather x (n-1)/n)\n# %-14s %12s %11s %11s %11s %11s %11s %7s\n",
        W, comm->backend(), iters, "op", "bytes", "time_us", "algbw_GB/s", "busbw_GB/s", "mpi_us", "mpi_busbw",
        "ratio");
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    const int64_t n = std::max<int64_t>(W, bytes / 4 / W * W);  // divisible by the ranks
    torch::Tensor full = torch::ones({n}, device), part = torch::ones({n / W}, device);
    struct Op {
      const char* name;
      double factor;  // busbw = algbw x factor
    };
    for (const Op op : {Op{"all_reduce", 2.0 * (W - 1) / W}, Op{"reduce_scatter", double(W - 1) / W},
                        Op{"all_gather", double(W - 1) / W}, Op{"broadcast", 1.0}}) {
      const std::string name = op.name;
      auto through_communicator = [&] {
        if (name == "all_reduce")
          comm->all_reduce(full, ReduceOp::kSum);
        else if (name == "reduce_scatter")
          comm->reduce_scatter(full, part, ReduceOp::kSum);
        else if (name == "all_gather")
          comm->all_gather(part, full);
        else
          comm->broadcast(full, 0);
        if (gpu) torch::cuda::synchronize(device.index());  // GPU collectives return once queued
      };
      auto raw_mpi = [&] {
        if (gpu) return;  // Debian's Open MPI cannot read GPU memory: no raw column for NCCL
        if (name == "all_reduce")
          MPI_Allreduce(MPI_IN_PLACE, full.data_ptr(), static_cast<int>(n), MPI_FLOAT, MPI_SUM, rt.comm());
        else if (name == "reduce_scatter")
          MPI_Reduce_scatter_block(full.data_ptr(), part.data_ptr(), static_cast<int>(n / W), MPI_FLOAT, MPI_SUM,
                                   rt.comm());
        else if (name == "all_gather")
          MPI_Allgather(part.data_ptr(), static_cast<int>(n / W), MPI_FLOAT, full.data_ptr(), static_cast<int>(n / W),
                        MPI_FLOAT, rt.comm());
        else
          MPI_Bcast(full.data_ptr(), static_cast<int>(n), MPI_FLOAT, 0, rt.comm());
      };
      auto [ours, raw] = time_pair(rt.comm(), iters, through_communicator, raw_mpi);
      if (gpu) raw = std::numeric_limits<double>::quiet_NaN();
      const double size = 4.0 * n, alg = size / ours / 1e9, bus = alg * op.factor,
                   raw_bus = size / raw * op.factor / 1e9;
      if (rt.rank() == 0) {
        if (json)
          rows.push_back({{"op", name},
                          {"bytes", size},
                          {"time_us", ours * 1e6},
                          {"algbw_gb_s", alg},
                          {"busbw_gb_s", bus},
                          {"mpi_time_us", raw * 1e6},
                          {"mpi_busbw_gb_s", raw_bus},
                          {"ratio", raw / ours}});
        else
          std::printf("  %-14s %12.0f %11.1f %11.2f %11.2f %11.1f %11.2f %7.2f\n", name.c_str(), size, ours * 1e6, alg,
                      bus, raw * 1e6, raw_bus, raw / ours);
      }
    }
  }
  if (json && rt.rank() == 0)
    std::cout << ordered_json({{"ranks", W}, {"iters", iters}, {"results", rows}}).dump(2) << "\n";
  return 0;
}

int run_optim(bool json, int64_t n, int iters, int threads) {
  if (threads < 1) throw Error("dtbench optim", "--threads must be at least 1 (got " + std::to_string(threads) + ")");
  at::set_num_threads(threads);
  torch::Tensor p = torch::randn({n}), g = torch::randn({n}), m = torch::zeros({n}), v = torch::zeros({n});
  torch::Tensor copy = torch::empty({n}, torch::kBFloat16);
  AdamWConfig c;
  std::vector<double> t_opt, t_copy;
  // The update reads p, g, m, v (16 B) and writes p, m, v, bf16 copy (14 B): 30 B per element.
  const double bytes = 30.0 * n;
  std::vector<char> src(static_cast<size_t>(bytes / 2)), dst(src.size());  // memcpy reads and writes bytes/2 each
  for (int i = 0; i < iters + 1; ++i) {
    double t0 = now();
    adamw_step(p, g, m, v, i + 1, c, 1.0, copy);
    if (i > 0) t_opt.push_back(now() - t0);
    t0 = now();
    std::memcpy(dst.data(), src.data(), src.size());
    if (i > 0) t_copy.push_back(now() - t0);
  }
  const auto median = [](std::vector<double> t) {
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  const double opt = bytes / median(t_opt) / 1e9, cp = bytes / median(t_copy) / 1e9;
  // The weight averages' cost: the update alone, with an EMA, and with EDM2's two power-function
  // profiles (as the trainer runs them: adamw_step's averages), and the two as the caller's own passes.
  struct Variant {
    const char* name;
    int averages;
    bool fused;
  };
  const std::vector<Variant> variants = {
      {"none", 0, true}, {"ema (1)", 1, true}, {"phema (2)", 2, true}, {"phema (2, caller's passes)", 2, false}};
  std::vector<torch::Tensor> avgs = {p.clone(), p.clone()};
  // (interleaved: every step times each variant once, so that a noisy neighbour affects all alike)
  std::vector<std::vector<double>> times(variants.size());
  for (int i = 0; i < iters + 1; ++i)
    for (size_t x = 0; x < variants.size(); ++x) {
      const Variant& var = variants[x];
      std::vector<WeightAverage> fused;
      if (var.fused)
        for (int k = 0; k < var.averages; ++k) fused.push_back({avgs[k], 0.999});
      const double t0 = now();
      adamw_step(p, g, m, v, i + 1, c, 1.0, copy, fused);
      if (!var.fused)
        for (int k = 0; k < var.averages; ++k) ema_update(avgs[k], p, 0.999);
      if (i > 0) times[x].push_back(now() - t0);
    }
  ordered_json averaging = ordered_json::array();
  const double base = median(times[0]) * 1e3;
  for (size_t x = 0; x < variants.size(); ++x) {
    const double ms = median(times[x]) * 1e3;
    averaging.push_back({{"averages", variants[x].name}, {"ms_per_step", ms}, {"extra_over_none", ms / base - 1}});
  }
  if (json) {
    std::cout << ordered_json({{"elements", n},
                               {"bytes_per_step", bytes},
                               {"adamw_gb_s", opt},
                               {"memcpy_gb_s", cp},
                               {"fraction_of_memcpy", opt / cp},
                               {"weight_averages", averaging},
                               {"threads", threads}})
                     .dump(2)
              << "\n";
    return 0;
  }
  std::printf(
      "fused AdamW (%d thread(s)): %.2f GB/s effective (30 B/element, %lld elements); memcpy of the same bytes (1 "
      "thread): %.2f GB/s -> %.0f%%\n",
      threads, opt, static_cast<long long>(n), cp, 100 * opt / cp);
  std::printf("weight averages in the update (median of %d steps):\n", iters);
  for (const auto& a : averaging)
    std::printf("  %-28s %8.2f ms  %+6.1f%%\n", a["averages"].get<std::string>().c_str(),
                a["ms_per_step"].get<double>(), 100 * a["extra_over_none"].get<double>());
  return 0;
}

std::string signed_bytes(double b) { return (b < 0 ? "-" : "+") + format_bytes(std::abs(b)); }

int run_train(MpiRuntime& rt, const train::ThroughputConfig& c, bool json, const BlasKernels& blas) {
  const train::ThroughputResult r = train::measure_training_throughput(c, rt);
  if (rt.rank() != 0) return 0;
  const AllocatorInfo allocator = allocator_in_use();
  if (json) {
    std::cout << ordered_json({{"model", r.model},
                               {"summary", r.summary},
                               {"device", r.device},
                               {"backend", r.backend},
                               {"ranks", r.ranks},
                               {"params", r.params},
                               {"micro_batch", r.micro_batch},
                               {"resolution", c.resolution},
                               {"latent_size", r.latent_size},
                               {"sharding", c.sharding},
                               {"activation_checkpointing", c.activation_checkpointing},
                               {"dtype", c.compute_dtype},
                               {"channels_last", c.channels_last},
                               {"flops_per_image", r.flops_per_image},
                               {"step_seconds", r.step_seconds},
                               {"images_per_second", r.images_per_second},
                               {"tflops_per_device", r.tflops_per_rank},
                               {"peak_tflops", r.peak_tflops},
                               {"mfu", r.mfu},
                               {"peak_memory_bytes", r.peak_memory_bytes},
                               {"device_memory_bytes", r.device_memory_bytes},
                               {"memory_limit_gib", c.memory_limit_gib},
                               {"final_loss", r.final_loss},
                               {"threads", r.threads},
                               {"minor_faults_per_step", r.minor_faults_per_step},
                               {"system_seconds_per_step", r.system_seconds_per_step},
                               {"allocated_growth_per_step", r.allocated_growth_per_step},
                               {"forward_seconds", r.forward_seconds},
                               {"backward_seconds", r.backward_seconds},
                               {"optimizer_seconds", r.optimizer_seconds},
                               {"resident_growth_per_step", r.resident_growth_per_step},
                               {"allocator", allocator.name + " " + allocator.version},
                               {"allocator_serves_malloc", allocator.serves_malloc},
                               {"blas_core", blas.running},
                               {"blas_library", blas.path}})
                     .dump()
              << "\n";
  } else {
    std::printf("# dtbench train: %s on %d x %s (%s), %s\n", r.model.c_str(), r.ranks, r.device.c_str(),
                r.backend.c_str(), r.summary.c_str());
    std::printf("#   %lld params, micro-batch %lld at %lld px (latent %lld), %s, %s%s%s; %.3g GFLOP/image (fwd+bwd)\n",
                static_cast<long long>(r.params), static_cast<long long>(r.micro_batch),
                static_cast<long long>(c.resolution), static_cast<long long>(r.latent_size), c.sharding.c_str(),
                c.compute_dtype.c_str(), c.activation_checkpointing ? ", activation checkpointing" : "",
                c.channels_last ? ", channels-last" : "", r.flops_per_image / 1e9);
    // (the device memory figures come from a GPU's caching allocator; the CPU has none)
    const std::string memory = r.device_memory_bytes > 0
                                   ? "memory peak " + format_bytes(static_cast<double>(r.peak_memory_bytes)) + " of " +
                                         format_bytes(static_cast<double>(r.device_memory_bytes)) + " | "
                                   : "";
    std::printf(
        "  step %.1f ms | %.1f img/s | %.4g TFLOP/s per device | peak %.4g TFLOP/s (measured %s matmul) | MFU %.1f%% | "
        "%sloss %.4f\n",
        r.step_seconds * 1e3, r.images_per_second, r.tflops_per_rank, r.peak_tflops, c.compute_dtype.c_str(),
        100 * r.mfu, memory.c_str(), r.final_loss);
    std::printf(
        "  per step: %.0f minor page faults, %.3f s in the kernel, allocator: %s held, %s resident | %lld compute "
        "thread(s) per rank\n",
        r.minor_faults_per_step, r.system_seconds_per_step, signed_bytes(r.allocated_growth_per_step).c_str(),
        signed_bytes(r.resident_growth_per_step).c_str(), static_cast<long long>(r.threads));
    if (r.forward_seconds > 0)
      std::printf("  phases: forward %.1f ms, backward %.1f ms, optimizer %.1f ms\n", r.forward_seconds * 1e3,
                  r.backward_seconds * 1e3, r.optimizer_seconds * 1e3);
    std::printf("# %s\n# %s\n", describe(allocator).c_str(), describe(blas).c_str());
  }
  if (!std::isfinite(r.final_loss)) {
    std::fprintf(stderr, "dtbench: error: the loss is not finite after the timed steps\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const BlasKernels blas = select_native_blas_kernels();  // (before any BLAS call)
  CLI::App app{"dtbench: communication and optimizer benchmarks"};
  app.require_subcommand(1);
  bool json = false;
  int64_t min_bytes = 1024, max_bytes = 256ll << 20, elements = 64ll << 20;
  int iters = 10;
  std::string backend = "mpi";
  CLI::App* c = app.add_subcommand("comm", "collectives through the Communicator vs raw MPI (run under mpirun)");
  c->add_flag("--json", json, "print JSON (rank 0)");
  c->add_option("--backend", backend, "mpi: host memory; nccl: each rank's GPU (one rank per GPU)")
      ->check(CLI::IsMember({"mpi", "nccl"}))
      ->capture_default_str();
  c->add_option("--min-bytes", min_bytes, "smallest message")->capture_default_str();
  c->add_option("--max-bytes", max_bytes, "largest message")->capture_default_str();
  c->add_option("--iters", iters, "timed runs per size (median reported)")->capture_default_str();
  CLI::App* o = app.add_subcommand("optim", "fused AdamW bandwidth vs memcpy");
  o->add_flag("--json", json, "print JSON");
  o->add_option("--elements", elements, "parameters in the flat shard")->capture_default_str();
  o->add_option("--iters", iters, "timed steps (median reported)")->capture_default_str();
  int optim_threads = 1;
  o->add_option("--threads", optim_threads, "threads of the update (LibTorch's intra-op pool)")->capture_default_str();
  train::ThroughputConfig tc;
  CLI::App* t =
      app.add_subcommand("train", "training throughput and MFU of a preset (run under mpirun: one rank per GPU)");
  t->add_option("--model", tc.model, "preset (dtmodel list)")->capture_default_str();
  t->add_option("--batch", tc.micro_batch, "micro-batch per rank")->capture_default_str();
  t->add_option("--resolution", tc.resolution, "image size in pixels (latent models: / 8)")->capture_default_str();
  t->add_option("--model-set", tc.model_set, "key=value overrides of the preset");
  t->add_option("--steps", tc.steps, "timed steps per repeat")->capture_default_str();
  t->add_option("--warmup", tc.warmup, "untimed steps first")->capture_default_str();
  t->add_option("--repeats", tc.repeats, "repeats of the timed steps (median reported)")->capture_default_str();
  t->add_option("--sharding", tc.sharding, parallel::name_table(parallel::ShardingStrategy{}).joined())
      ->check(CLI::IsMember(parallel::name_table(parallel::ShardingStrategy{}).names()))
      ->capture_default_str();
  t->add_flag("--activation-checkpointing", tc.activation_checkpointing,
              "recompute each unit in backward (zero3 gathers each unit again for it)");
  t->add_option(
       "--dtype", tc.compute_dtype,
       "compute dtype, " + parallel::name_table(parallel::ComputeDtype{}).joined() + " (fp32 masters either way)")
      ->check(CLI::IsMember(parallel::name_table(parallel::ComputeDtype{}).names()))
      ->capture_default_str();
  t->add_flag("--channels-last", tc.channels_last, "NHWC activations (UNets)");
  t->add_option("--peak-tflops", tc.peak_tflops, "MFU denominator instead of the measured matmul rate");
  t->add_option("--memory-limit-gib", tc.memory_limit_gib,
                "cap each GPU's allocator at this many GiB: what fits on a smaller GPU (e.g. 80 on an H200)");
  t->add_option("--threads", tc.threads, "CPU compute threads per rank (0: cores on the node / ranks on it)")
      ->capture_default_str();
  t->add_option("--profile", tc.profile,
                "after the timed steps, one more under LibTorch's profiler: its Chrome trace (rank 0) to this file "
                "(bench/peer/op_table.py sums it per op)");
  t->add_flag("--json", json, "print one JSON line (rank 0)");
  CLI11_PARSE(app, argc, argv);
  if (*t) {
    return run_ranks(&argc, &argv, [&](MpiRuntime& rt) { return run_train(rt, tc, json, blas); });
  }
  if (*o) {
    try {
      return run_optim(json, elements, iters, optim_threads);
    } catch (const Error& e) {
      std::fprintf(stderr, "dtbench: error: %s\n", e.what());
      return 2;
    }
  }
  return run_ranks(&argc, &argv,
                   [&](MpiRuntime& rt) { return run_comm(rt, json, backend, min_bytes, max_bytes, iters); });
}
