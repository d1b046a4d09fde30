// dtrainer — train a diffusion backbone on MPI ranks (see `dtrainer --help`, docs/TRAINING.md).
// The program around the training loop (train/trainer.h): the options and job file, the checks
// every rank agrees on before anything is written, the plan, the device, the run directory and
// its lock, the resume checkpoint, the built-in data; then the loop.
#include <filesystem>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/allocator.h"
#include "dtrainer/core/blas_kernels.h"
#include "dtrainer/core/log.h"
#include "dtrainer/core/memory_info.h"
#include "dtrainer/core/remove_tree.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/compute_threads.h"
#include "dtrainer/parallel/device_stats.h"
#include "dtrainer/parallel/local_device.h"
#include "dtrainer/parallel/mpi_runtime.h"
#include "dtrainer/parallel/watchdog.h"
#include "dtrainer/train/memory_plan.h"
#include "dtrainer/train/preemption.h"
#include "dtrainer/train/trainer.h"

namespace fs = std::filesystem;

namespace dtrainer::train {
namespace {

int run(int argc, char** argv, const BlasKernels& blas) {
  return parallel::run_ranks(&argc, &argv, [&](parallel::MpiRuntime& rt) -> int {
    TrainConfig c;
    CLI::App app{
        "dtrainer: distributed training of text-to-image diffusion backbones.\n"
        "  mpirun -n 2 dtrainer                        the quickstart (synthetic shapes, tiny UNet)\n"
        "  mpirun -n 16 dtrainer --config jobs/X.toml  a configured experiment\n"
        "Every option is also a TOML key (snake_case) for --config; the command line wins.\n"
        "The run directory holds metrics.jsonl, config.toml, ckpt/ and samples/."};
    add_train_options(app, c);
    DataPlan data;
    StartupPlan plan;
    fs::path run_dir;
    torch::Device device = torch::kCPU;
    std::unique_ptr<AlignmentHook> align;
    // A check that fails on one rank fails on all (parallel/agreement.h): every rank exits 2 and rank 0
    // prints the message, whether the problem is in the configuration (the same everywhere) or in
    // what one rank sees (a file, a device).
    auto refuse = [&](const CollectiveError& e) {
      if (rt.rank() == 0)
        std::cerr << "dtrainer: configuration error: "
                  << (e.failures() == rt.world() ? e.detail() : std::string(e.what())) << "\n";
      return 2;
    };
    std::string error;
    try {
      parse_train_config(app, argc, argv);
    } catch (const CLI::ParseError& e) {
      std::ostringstream quiet;  // every rank parses the same argv: rank 0 speaks for all
      const int code = rt.rank() == 0 ? app.exit(e) : app.exit(e, quiet, quiet);
      return code == 0 ? 0 : 2;  // --help: 0; anything else: a configuration error
    } catch (const Error& e) {
      error = e.what();
    }
    // From here on no phase waits forever, start-up included (a hung file system, a stalled rank).
    parallel::WatchdogConfig wc;
    wc.timeout_s = c.watchdog_timeout;
    wc.factor = c.watchdog_factor;
    wc.min_s = c.watchdog_min;
    parallel::Watchdog watchdog(rt.comm(), wc, rt.thread_multiple());
    try {
      const parallel::Watchdog::Phase phase(&watchdog, "start-up: plan", 0);
      if (!error.empty()) throw Error("", error);
      validate_train_config(c, rt.world());
      run_dir = c.run_dir.empty() ? fs::path("runs") / c.name : fs::path(c.run_dir);
      data = plan_data(c, run_dir);
      resolve_stage_source(c, run_dir,
                           c.dry_run);  // (a stage's source: its latent side and scale, recorded in config.toml)
      plan = make_startup_plan(c, data, rt.world());
      if (!c.dry_run)
        device = parallel::select_device(rt, c.device);  // (a dry run plans on a machine without the GPUs)
      if (!c.dry_run && !data.found) throw Error("data", data.train_dirs.front() + " does not exist");
      if (!c.dry_run) align = AlignmentHook::make(c, data, run_dir);
      if (!c.dry_run) {
        // Memory: the plan against what this node has left (host) and the GPU's size.
        const MemoryEstimate mem = estimate_memory(c, plan.cost, plan.world, plan.micro);
        const HostMemory host = available_host_memory();
        if (device.is_cpu())
          check_memory_fits(c, mem, rt.local_world(), static_cast<double>(host.available_bytes),
                            "the memory available (" + host.source + ")");
        else
          check_memory_fits(c, mem, 1, static_cast<double>(parallel::device_total_memory(device)),
                            "the memory of " + device.str());
      }
    } catch (const Error& e) {
      error = e.what();
    }
    try {
      parallel::agree_on(rt.comm(), error);
    } catch (const CollectiveError& e) {
      return refuse(e);
    }
    if (c.dry_run) {
      if (rt.rank() == 0)
        std::cout << describe_plan(c, data, plan, std::string(name_of(c.device)) + " (chosen at start-up)");
      return 0;
    }
    const int64_t threads = parallel::set_compute_threads(c.threads, rt.local_world());
    log_info(describe(allocator_in_use()) + "; " + describe(blas) + "; " + std::to_string(threads) +
             " compute thread(s) per rank");
    install_preemption_handlers();  // (a signal from here on stops the run at its first step boundary, checkpointed)
    // The run directory: created and locked (one trainer at a time), then the checkpoint to resume
    // chosen and checked against this configuration, then the weights file. Nothing in the
    // directory changes before these pass (a directory this start created is removed again).
    std::unique_ptr<RunDirectory> dir;
    ResumePlan resume;
    std::error_code ec;
    const bool existed = fs::exists(run_dir, ec);
    try {
      std::string holder = "dtrainer";
      for (int i = 1; i < argc; ++i) holder += std::string(" ") + argv[i];
      holder += ", " + std::to_string(rt.world()) + " rank" + (rt.world() > 1 ? "s" : "");
      const parallel::Watchdog::Phase phase(&watchdog, "start-up: run directory", 0);
      parallel::agree(rt.comm(), [&] { dir = std::make_unique<RunDirectory>(run_dir, rt.rank(), holder); });
      parallel::agree(rt.comm(), [&] {
        resume = plan_resume(c, run_dir);
        if (!c.init_weights.empty() && !resume.checkpoint) {
          ckpt::check_weights_file(c.init_weights);  // well-formed and finite, before anything is written
          // (another resolution is a stage: init_from adapts the grid and the schedule; init_weights would not)
          const StageSource was = read_stage_source(c.init_weights, "init_weights");
          if (was.latent_size > 0 && was.latent_size != plan.backbone.inputs.latent_size)
            throw Error("init_weights", c.init_weights + " was trained at latent side " +
                                            std::to_string(was.latent_size) + ", this run trains at " +
                                            std::to_string(plan.backbone.inputs.latent_size) +
                                            ": start a stage with init_from = FILE instead (it adapts the "
                                            "positional embeddings and the noise schedule: docs/TRAINING.md "
                                            "\"Stages\")");
        }
        if (!c.vae.empty()) check_sample_vae(c.vae, data, plan.backbone.inputs, rt.rank());
        if (!c.init_from.empty() && !resume.checkpoint) {  // (a stage's source fits this model)
          if (std::filesystem::is_regular_file(c.init_from)) ckpt::check_weights_file(c.init_from);
          check_source_fits(c.init_from, plan.backbone);
        }
      });
    } catch (const CollectiveError& e) {
      const bool created = dir && !existed;
      dir.reset();
      if (created && rt.rank() == 0) try_remove_tree(run_dir);
      return refuse(e);
    }
    const std::string toml = train_config_toml(c);
    if (rt.rank() == 0)
      std::cout << describe_plan(
                       c, data, plan,
                       parallel::device_name(device) + (device.is_cuda() ? " (" + device.str() + " on rank 0)" : ""))
                << std::flush;
    {
      const parallel::Watchdog::Phase phase(&watchdog, "start-up: synthetic data", 0);
      synthesize_if_needed(c, data, rt.rank(), rt.comm());
      if (c.data.size() == 1 && c.data[0] == "synthetic:shapes") data = plan_data(c, run_dir);
    }
    TrainerSetup setup{c, toml, device, data, plan, std::move(resume), std::move(align)};
    return train(std::move(setup), rt, *dir, watchdog);
  });
}

}  // namespace
}  // namespace dtrainer::train

int main(int argc, char** argv) {
  const dtrainer::BlasKernels blas = dtrainer::select_native_blas_kernels();  // (before any BLAS call)
  return dtrainer::train::run(argc, argv, blas);
}
