// The study file and its plan: refusals before anything starts (unknown keys, empty axes, runs
// that cannot fit), the iso-compute arithmetic against C computed by hand from the model's own
// MAC count, the geometric schedule, one run for identical jobs, and a started run whose job
// changed.
#include <filesystem>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/models/backbone_spec.h"
#include "dtrainer/study/study_file.h"
#include "dtrainer/study/study_plan.h"
#include "dtrainer/study/study_runner.h"
#include "error_text.h"

namespace fs = std::filesystem;
using namespace dtrainer;
using namespace dtrainer::study;
using dtrainer::test::error_of;

namespace {

const std::string kBase = R"(
name = "t"
data = ["synthetic:shapes"]
synthetic_images = 256
synthetic_image_size = 16
model = "unet-tiny"
global_batch = 8
warmup_steps = 2
)";

struct Files {
  fs::path dir;
  Files() {
    dir = fs::temp_directory_path() / ("dtstudy-plan-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    write_file_atomic(dir / "base.toml", kBase);
  }
  ~Files() { fs::remove_all(dir); }
  Study study(const std::string& text) const {
    const fs::path p = dir / "s.toml";
    write_file_atomic(p, "job = \"base.toml\"\ndir = \"" + (dir / "study").string() + "\"\n" + text);
    return read_study(p);
  }
};

PlanOptions quick() {
  PlanOptions o;
  o.measure = false;
  return o;
}

const std::string kAxis = "[[axis]]\nname = \"width\"\nkey = \"model_set.model_channels\"\nvalues = [16, 32]\n";

}  // namespace

TEST_CASE("study files: what is wrong is named where it is, before anything starts", "[study]") {
  Files f;
  // An unknown key anywhere: top level, a section, an axis.
  CHECK_THAT(error_of([&] { f.study("ranx = 2\n" + kAxis); }),
             Catch::Contains("s.toml:3:8") && Catch::Contains("unknown key 'ranx'"));
  CHECK_THAT(error_of([&] { f.study("[budget]\nrule = \"steps\"\nstep = 3\n" + kAxis); }),
             Catch::Contains("unknown key 'budget.step'"));
  CHECK_THAT(error_of([&] { f.study(kAxis + "valuess = [1]\n"); }), Catch::Contains("unknown key 'axis.valuess'"));
  // An empty axis, no axis, a value list that is not one.
  CHECK_THAT(error_of([&] { f.study("[[axis]]\nname = \"w\"\nkey = \"lr\"\nvalues = []\n"); }),
             Catch::Contains("axis 'w' has no values"));
  CHECK_THAT(error_of([&] { f.study("ranks = 2\n"); }), Catch::Contains("no [[axis]]"));
  CHECK_THAT(error_of([&] { f.study("[[axis]]\nname = \"w\"\nkey = \"lr\"\nvalues = 3\n"); }),
             Catch::Contains("needs values = [...]"));
  // Duplicates, wrong types and choices.
  CHECK_THAT(error_of([&] { f.study(kAxis + kAxis); }), Catch::Contains("a second axis named 'width'"));
  CHECK_THAT(error_of([&] { f.study("[[axis]]\nname = \"w\"\nkey = \"lr\"\nvalues = [1e-3, 0.001]\n"); }),
             Catch::Contains("two values labelled"));
  CHECK_THAT(error_of([&] { f.study("ranks = \"2\"\n" + kAxis); }), Catch::Contains("ranks wants an integer"));
  CHECK_THAT(error_of([&] { f.study("ranks = 0\n" + kAxis); }), Catch::Contains("ranks must be at least 1"));
  CHECK_THAT(error_of([&] { f.study("[budget]\nrule = \"iso\"\n" + kAxis); }),
             Catch::Contains("expected one of steps, iso-compute"));
  CHECK_THAT(error_of([&] { f.study("[budget]\nrule = \"iso-compute\"\n" + kAxis); }),
             Catch::Contains("needs compute_gflops"));
  CHECK_THAT(error_of([&] { f.study(kAxis + "[[fit]]\ny = \"alignment\"\nx = \"K\"\n"); }),
             Catch::Contains("expected one of C, N, D"));
  CHECK_THAT(error_of([&] {
               write_file_atomic(f.dir / "nojob.toml", "job = \"missing.toml\"\n" + kAxis);
               read_study(f.dir / "nojob.toml");
             }),
             Catch::Contains("nojob.toml:1:7") && Catch::Contains("no such job file"));
  CHECK_THAT(error_of([&] { f.study("name = \"a b\"\n" + kAxis); }), Catch::Contains("must be letters"));
  CHECK_THAT(error_of([&] { f.study("ranks = [\n"); }), Catch::Contains("not valid TOML"));
  CHECK_THAT(error_of([&] { f.study("[[axis]]\nname = \"w\"\nvalues = [1, 2]\n"); }), Catch::Contains("needs key"));
}

TEST_CASE("study plans: a run that cannot start is named before anything runs", "[study]") {
  Files f;
  // A job key dtrainer does not have (the study file's line), one dtstudy sets itself.
  CHECK_THAT(error_of([&] { plan_study(f.study("[set]\nlearning_rate = 1e-4\n" + kAxis), quick()); }),
             Catch::Contains("s.toml:4:17") && Catch::Contains("unknown job key 'learning_rate'"));
  CHECK_THAT(error_of([&] { plan_study(f.study("[set]\nrun_dir = \"x\"\n" + kAxis), quick()); }),
             Catch::Contains("set by dtstudy"));
  // A value dtrainer refuses, a preset field that does not exist: the run is named.
  CHECK_THAT(error_of([&] {
               plan_study(f.study("[[axis]]\nname = \"b\"\nkey = \"global_batch\"\nvalues = [8, 9]\n"), quick());
             }),
             Catch::Contains("run 'b-9'") && Catch::Contains("not divisible by the 2 ranks"));
  CHECK_THAT(error_of([&] {
               plan_study(f.study("[[axis]]\nname = \"w\"\nkey = \"model_set.widht\"\nvalues = [8]\n"), quick());
             }),
             Catch::Contains("run 'w-8'") && Catch::Contains("widht"));
  CHECK_THAT(error_of([&] { plan_study(f.study("[[axis]]\nname = \"s\"\nkey = \"steps\"\nvalues = [0]\n"), quick()); }),
             Catch::Contains("run 's-0'") && Catch::Contains("steps"));
  // Memory: a model far beyond this node's memory (nothing is allocated to find out).
  CHECK_THAT(error_of([&] {
               plan_study(f.study("[[axis]]\nname = \"w\"\nkey = \"model_set.model_channels\"\nvalues = [32, 8192]\n"),
                          PlanOptions{false, true, 0});
             }),
             Catch::Contains("run 'w-8192'") && Catch::Contains("memory"));
  // iso-compute chooses the steps: giving them too is refused.
  CHECK_THAT(error_of([&] {
               plan_study(f.study("[budget]\nrule = \"iso-compute\"\ncompute_gflops = 100\n[set]\nsteps = 5\n" + kAxis),
                          quick());
             }),
             Catch::Contains("chosen by budget.rule"));
}

TEST_CASE("iso-compute: steps so that every run spends the same C, by hand from the MAC counts", "[study]") {
  Files f;
  const double C = 5000;
  const StudyPlan p =
      plan_study(f.study("[budget]\nrule = \"iso-compute\"\ncompute_gflops = 5000\nround_to = 10\n"
                         "[[axis]]\nname = \"w\"\nkey = \"model_set.model_channels\"\nvalues = [16, 32, 48]\n"
                         "[set]\nmodel_set = [\"norm_groups=4\", \"head_dim=8\"]\n"),
                 quick());
  REQUIRE(p.runs.size() == 3);
  for (const PlannedRun& r : p.runs) {
    // [S1]'s C per sample by hand: 6 x the conv + linear weight MACs of the model at the data's
    // shape (16 px pixels: 3 channels; the toy text encoder: 256 wide, 77 tokens).
    const int64_t width = std::stoll(r.name.substr(2));
    models::BackboneInputs in{3, 16, 256, 77};
    const models::BackboneSpec spec = models::resolve_backbone(
        "unet-tiny", {"norm_groups=4", "head_dim=8", "model_channels=" + std::to_string(width)}, in, false);
    const double gf = 6.0 * static_cast<double>(models::backbone_cost(spec).macs_linear_conv) / 1e9;
    CHECK(r.gflops_per_sample == Approx(gf).epsilon(1e-12));
    CHECK(r.params == models::backbone_cost(spec).params);
    const double per_step = 8 * gf;
    // The multiple of 10 steps nearest C / (batch x C per sample).
    const int64_t expected = static_cast<int64_t>(std::floor(C / per_step / 10 + 0.5)) * 10;
    CHECK(r.steps == expected);
    CHECK(r.compute_gflops == Approx(static_cast<double>(expected) * per_step).epsilon(1e-12));
    CHECK(std::abs(r.compute_gflops - C) <= 5 * per_step + 1e-9);  // within half a rounding step
  }
  CHECK(p.runs[0].steps > p.runs[1].steps);  // the smaller model trains longer
  CHECK(p.total_compute_gflops ==
        Approx(p.runs[0].compute_gflops + p.runs[1].compute_gflops + p.runs[2].compute_gflops));
  CHECK(iso_compute_steps(1.0, 8, 1.0, 10) == 10);  // (at least one rounding step)
}

TEST_CASE("geometric schedule: S / ratio^k, rounded, distinct, ascending", "[study]") {
  CHECK(geometric_eval_steps(1640, 5, 2.0) == std::vector<int64_t>{103, 205, 410, 820});  // 102.5 rounds up
  CHECK(geometric_eval_steps(100, 4, 10.0) == std::vector<int64_t>{1, 10});               // 0.1 drops
  CHECK(geometric_eval_steps(3, 6, 2.0) == std::vector<int64_t>{1, 2});                   // 0.75 -> 1, once
  Files f;
  const StudyPlan p = plan_study(
      f.study("[budget]\nrule = \"steps\"\nsteps = 80\n[eval]\nschedule = \"geometric\"\npoints = 4\n" + kAxis),
      quick());
  CHECK(p.runs[0].eval_steps == std::vector<int64_t>{10, 20, 40});
  CHECK_THAT(p.runs[0].job_toml, Catch::Contains("eval_steps = [10, 20, 40]") && Catch::Contains("eval_every = 0") &&
                                     Catch::Contains("steps = 80"));
  CHECK(p.runs[0].evaluations == 5);  // 0, 10, 20, 40, 80
}

TEST_CASE("study plans: identical jobs are one run in both families; job files are exact", "[study]") {
  Files f;
  // unet-tiny's transformer_depth is 0,1 and its width 32: td1 and width 32 are the base run.
  const StudyPlan p = plan_study(
      f.study(kAxis + "[[axis]]\nname = \"depth\"\nkey = \"model_set.transformer_depth\"\nvalues = [\"0,1\", \"0,2\"]\n"
                      "labels = [\"td1\", \"td2\"]\n"),
      quick());
  REQUIRE(p.runs.size() == 3);
  CHECK(p.runs[1].name == "width-32");
  CHECK(p.runs[1].families == std::vector<std::string>{"width", "depth"});
  CHECK(p.runs[2].name == "depth-td2");
  CHECK_THAT(p.runs[2].job_toml, Catch::Contains("model_set = [\"transformer_depth=0,2\"]"));
  CHECK_THAT(p.runs[0].job_toml, Catch::Contains("run_dir = \"" + (f.dir / "study" / "runs" / "width-16").string()));
  // The job file reads back to the plan's run.
  CHECK(p.runs[2].params > p.runs[1].params);
}

TEST_CASE("a started run whose job changed is refused, naming the line", "[study]") {
  Files f;
  StudyPlan p = plan_study(f.study("[set]\nlr = 1e-3\n" + kAxis), quick());
  prepare_study_directory(p);
  CHECK(fs::exists(f.dir / "study" / "configs" / "width-16.toml"));
  CHECK(fs::exists(f.dir / "study" / "plan.json"));
  // Not started yet: a changed study rewrites its job files.
  StudyPlan q = plan_study(f.study("[set]\nlr = 2e-3\n" + kAxis), quick());
  prepare_study_directory(q);
  CHECK_THAT(read_file(f.dir / "study" / "configs" / "width-16.toml"), Catch::Contains("lr = 0.002"));
  // Started: refused, and the job file on disk is left as it was.
  fs::create_directories(q.runs[0].run_dir);
  StudyPlan r = plan_study(f.study("[set]\nlr = 3e-3\n" + kAxis), quick());
  CHECK_THAT(
      error_of([&] { prepare_study_directory(r); }),
      Catch::Contains("run 'width-16'") && Catch::Contains("was 'lr = 0.002', now 'lr = 0.0030000000000000001'"));
  CHECK_THAT(read_file(f.dir / "study" / "configs" / "width-32.toml"), Catch::Contains("lr = 0.002"));
}
