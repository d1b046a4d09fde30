// dtstudy — a scaling study from one file: plan, run, status, report (docs/STUDY.md).
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <Kokkos_Core.hpp>

#include "dtrainer/analysis/chinchilla_fit.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/blas_kernels.h"
#include "dtrainer/study/study_file.h"
#include "dtrainer/study/study_plan.h"
#include "dtrainer/study/study_report.h"
#include "dtrainer/study/study_runner.h"
#include "dtrainer/study/study_status.h"

namespace fs = std::filesystem;
using namespace dtrainer;

namespace {

// This program's own path: dtrainer is built beside it.
fs::path self_path() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("dtstudy") : p;
}

}  // namespace

int main(int argc, char** argv) {
  select_native_blas_kernels();  // (as the trainer does: the step timing then measures what the trainer will see)
  CLI::App app{
      "dtstudy: a scaling study from one file (docs/STUDY.md).\n"
      "  dtstudy plan studies/shapes-cpu.toml      the runs: N, compute, steps, memory, time; nothing runs\n"
      "  dtstudy run studies/shapes-cpu.toml       train them (mpirun, one after another; resumable)\n"
      "  dtstudy run STUDY.toml --launcher slurm   an array job of the runs and a report job after it\n"
      "  dtstudy status runs/study-shapes-cpu      where each run stands\n"
      "  dtstudy report runs/study-shapes-cpu      fit the study's laws, write report.md and plots"};
  app.require_subcommand(1);
  std::string study_file, study_dir, launcher = "local", mpirun = "mpirun", sbatch = "sbatch";
  fs::path dtrainer_bin = self_path().parent_path() / "dtrainer", scripts = "slurm";
  std::vector<std::string> mpirun_args, sbatch_args;
  bool json = false, no_measure = false, png = false;

  CLI::App* plan =
      app.add_subcommand("plan", "print the study's runs and their totals; checks every run, runs nothing");
  plan->add_option("study", study_file, "study file (TOML)")->required()->check(CLI::ExistingFile);
  plan->add_flag("--json", json, "the plan as JSON");
  plan->add_flag("--no-measure", no_measure, "do not time a training step (no time estimates)");

  CLI::App* run = app.add_subcommand("run", "train the study's runs (complete runs are never trained again)");
  run->add_option("study", study_file, "study file (TOML)")->required()->check(CLI::ExistingFile);
  run->add_option("--launcher", launcher, "local: mpirun, one run after another; slurm: an array job + a report job")
      ->check(CLI::IsMember({"local", "slurm"}))
      ->capture_default_str();
  run->add_option("--dtrainer", dtrainer_bin, "the trainer binary")->capture_default_str();
  run->add_option("--mpirun", mpirun, "the MPI launcher (local)")->capture_default_str();
  run->add_option("--mpirun-arg", mpirun_args, "an extra mpirun argument (repeatable)");
  run->add_option("--sbatch", sbatch, "sbatch (slurm)")->capture_default_str();
  run->add_option("--sbatch-arg", sbatch_args,
                  "an extra sbatch argument for both jobs (repeatable): --sbatch-arg=-pdebug");
  run->add_option("--slurm-scripts", scripts, "directory of sweep.sh and launch.sh (slurm)")->capture_default_str();
  run->add_flag("--no-measure", no_measure, "do not time a training step first (no time estimates)");

  CLI::App* status = app.add_subcommand("status", "per run: state, steps done, last metrics, checkpoint, wall time");
  status->add_option("dir", study_dir, "study directory")->required();

  CLI::App* report =
      app.add_subcommand("report", "fit the study's laws (bootstrap intervals); report.md, report.json, plots/");
  report->add_option("dir", study_dir, "study directory")->required();
  report->add_flag("--png", png, "plots as PNG too");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (*status) {
      std::cout << study::describe_study_status(study_dir);
      return 0;
    }
    if (*report) {
      analysis::quiet_solver_logging();
      Kokkos::ScopeGuard kokkos{Kokkos::InitArguments{}};
      const auto notes = study::write_study_report(study_dir, {png});
      for (const auto& n : notes) std::cerr << "dtstudy report: left out: " << n << "\n";
      std::cout << (fs::path(study_dir) / "report.md").string() << "\n";
      return 0;
    }
    study::StudyPlan p;
    try {
      const study::Study s = study::read_study(study_file);
      study::PlanOptions po;
      po.measure = !no_measure;
      p = study::plan_study(s, po);
    } catch (const Error& e) {
      std::cerr << "dtstudy: " << e.what() << "\n";
      return 2;  // (a bad study: nothing started)
    }
    if (*plan) {
      std::cout << (json ? study::study_plan_json(p).dump(2) + "\n" : study::describe_study_plan(p));
      return 0;
    }
    std::cout << study::describe_study_plan(p) << "\n" << std::flush;
    if (launcher == "slurm") {
      study::SlurmLaunch l{dtrainer_bin, self_path(), scripts, sbatch, sbatch_args};
      return study::submit_study_to_slurm(p, l, std::cout);
    }
    std::error_code ec;
    if (!fs::is_regular_file(dtrainer_bin, ec))
      throw Error(dtrainer_bin.string(), "no trainer binary here (build it, or give --dtrainer PATH)");
    study::LocalLaunch l{dtrainer_bin, mpirun, mpirun_args};
    return study::run_study_locally(p, l, std::cout);
  } catch (const Error& e) {
    std::cerr << "dtstudy: " << e.what() << "\n";
    return 1;
  }
}
