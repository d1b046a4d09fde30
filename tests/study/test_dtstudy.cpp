// dtstudy end to end, as a user runs it: a three-run study trained locally under mpirun, its
// status and its report; the same study stopped by a signal in its second run and rerun (nothing
// complete is trained again, the stopped run resumes) gives the same report as the uninterrupted
// one; bad studies are refused with exit 2 before anything is written; failed runs are reported.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "data/data_test_util.h"
#include "run_process.h"

using namespace dtrainer;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The tiny study (tests/study/tiny_study_body.toml): three widths of a tiny UNet, 80 steps each,
// evaluated at 10, 20, 40 and 80 (and step 0).
std::string study_text(const std::string& dir) {
  return "name = \"tiny\"\ndir = \"" + dir + "\"\nranks = 2\nthreads = 1\n" + slurp(TINY_STUDY_BODY);
}

std::string dtstudy(const std::string& args) { return std::string(DTSTUDY_PATH) + " " + args; }

// widths: the axis' values in place of the body's [8, 16, 24] (a shorter study), when not empty.
std::string write_study(const std::string& root, const std::string& name, const std::string& widths = "") {
  const std::string file = root + "/" + name + ".toml";
  std::string text = study_text(root + "/" + name);
  if (!widths.empty()) {
    const std::string all = "values = [8, 16, 24]";
    REQUIRE(text.find(all) != std::string::npos);
    text.replace(text.find(all), all.size(), "values = [" + widths + "]");
  }
  std::ofstream(file) << text;
  return file;
}

std::map<std::string, int> launches(const fs::path& dir, std::map<std::string, std::string>* states = nullptr) {
  std::map<std::string, int> n;
  std::ifstream in(dir / "launches.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    ++n[j["run"].get<std::string>()];
    if (states) (*states)[j["run"].get<std::string>()] += j["state"].get<std::string>() + " ";
  }
  return n;
}

int64_t last_training_step(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  int64_t step = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("loss") && j.contains("step")) step = j["step"].get<int64_t>();
  }
  return step;
}

// Running and not a zombie (the background process is reparented: nobody here reaps it).
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

// Starts `command` in the background (output to `log`) and returns its pid once `run` has trained
// past `step` (a checkpoint at 10 is behind it).
pid_t start_until_step(const std::string& command, const std::string& log, const fs::path& run, int64_t step) {
  const auto started = test::run_process("sh -c '" + command + " > " + log + " 2>&1 & echo $!'");
  const pid_t pid = std::stoi(started.out);
  for (int i = 0; i < 1200 && last_training_step(run) < step; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE(last_training_step(run) >= step);
  return pid;
}

}  // namespace

TEST_CASE("dtstudy: run, stop in the middle, rerun: nothing retrained, the report as without the stop") {
  const std::string root = test::scratch_dir("dtstudy");
  const std::string mpi = " --mpirun " + std::string(MPIEXEC) + " --no-measure";

  // The study, uninterrupted.
  const std::string a = write_study(root, "a");
  const auto run_a = test::run_process(dtstudy("run " + a + mpi));
  INFO(run_a.out);
  REQUIRE(run_a.status == 0);
  CHECK_THAT(run_a.out, Catch::Contains("[3/3] width-24: complete") && Catch::Contains("all 3 runs complete"));
  const auto rep_a = test::run_process(dtstudy("report " + root + "/a"));
  INFO(rep_a.out);
  REQUIRE(rep_a.status == 0);
  const auto report_a = nlohmann::json::parse(slurp(root + "/a/report.json"));
  REQUIRE(report_a["fits"].size() == 2);
  // Three runs x evaluations at 10, 20, 40, 80: every record is a point; the fit is made.
  CHECK(report_a["fits"][0]["groups"][0]["points"] == 12);
  CHECK(report_a["fits"][0]["groups"][0].contains("b"));
  CHECK(report_a["fits"][0]["groups"][0]["b"].get<double>() < 0);  // the held-out loss falls with compute
  CHECK(fs::file_size(root + "/a/plots/eval_loss-vs-C.svg") > 1000);
  CHECK_THAT(slurp(root + "/a/report.md"), Catch::Contains("| width-16 | width | ") &&
                                               Catch::Contains("![eval_loss-vs-C](plots/eval_loss-vs-C.svg)"));
  // What ran is recorded: the job files, the commands, the commit.
  CHECK_THAT(slurp(root + "/a/commands.sh"), Catch::Contains("--config " + root + "/a/configs/width-8.toml"));
  CHECK_THAT(slurp(root + "/a/configs/width-16.toml"),
             Catch::Contains("eval_steps = [10, 20, 40]") && Catch::Contains("model_channels=16"));
  CHECK(nlohmann::json::parse(slurp(root + "/a/provenance.json")).contains("commit"));
  // Running it again trains nothing.
  const auto again = test::run_process(dtstudy("run " + a + mpi));
  CHECK(again.status == 0);
  CHECK_THAT(again.out, Catch::Contains("[1/3] width-8: complete (80 steps), not run again") &&
                            Catch::Contains("[3/3] width-24: complete (80 steps), not run again"));
  CHECK(launches(root + "/a") == std::map<std::string, int>{{"width-8", 1}, {"width-16", 1}, {"width-24", 1}});

  // The same study, signalled while its second run trains (after a checkpoint), then rerun.
  const std::string b = write_study(root, "b");
  const fs::path second = fs::path(root) / "b" / "runs" / "width-16";
  const pid_t pid = start_until_step(dtstudy("run " + b + mpi), root + "/b.log", second, 12);
  REQUIRE(::kill(pid, SIGTERM) == 0);
  for (int i = 0; i < 1200 && alive(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const std::string stopped = slurp(root + "/b.log");
  INFO(stopped);
  CHECK_THAT(stopped, Catch::Contains("passed to the trainer") && Catch::Contains("the study is interrupted"));
  CHECK_FALSE(fs::exists(second / "DONE"));
  CHECK_FALSE(fs::exists(fs::path(root) / "b" / "runs" / "width-24"));  // (the third never started)
  const auto status_b = test::run_process(dtstudy("status " + root + "/b"));
  CHECK_THAT(status_b.out, Catch::Contains("width-8") && Catch::Contains("complete") && Catch::Contains("preempted") &&
                               Catch::Contains("not started") && Catch::Contains("1 of 3 runs complete"));

  const auto rerun = test::run_process(dtstudy("run " + b + mpi));
  INFO(rerun.out);
  REQUIRE(rerun.status == 0);
  CHECK_THAT(rerun.out, Catch::Contains("[1/3] width-8: complete (80 steps), not run again") &&
                            Catch::Contains("[2/3] width-16: resuming"));
  std::map<std::string, std::string> states;
  CHECK(launches(root + "/b", &states) == std::map<std::string, int>{{"width-8", 1}, {"width-16", 2}, {"width-24", 1}});
  CHECK(states["width-16"] == "preempted complete ");
  REQUIRE(test::run_process(dtstudy("report " + root + "/b")).status == 0);
  // The same numbers: the runs are reproducible (CPU) and the stop cost nothing.
  CHECK(nlohmann::json::parse(slurp(root + "/b/report.json")) == report_a);
  const auto status_done = test::run_process(dtstudy("status " + root + "/b"));
  CHECK_THAT(status_done.out, Catch::Contains("3 of 3 runs complete"));

  // dtstudy killed outright (SIGKILL, no handler runs): its trainer still gets a stop (SIGUSR1, the
  // parent-death signal) and checkpoints instead of training on unwatched; the rerun finishes it.
  // (Two of the widths: the third would only repeat what study b showed.)
  const std::string c = write_study(root, "c", "8, 16");
  const fs::path first = fs::path(root) / "c" / "runs" / "width-8";
  const pid_t pid_c = start_until_step(dtstudy("run " + c + mpi), root + "/c.log", first, 12);
  REQUIRE(::kill(pid_c, SIGKILL) == 0);
  for (int i = 0; i < 1200 && !fs::exists(first / "PREEMPTED"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(fs::exists(first / "PREEMPTED"));
  CHECK_FALSE(fs::exists(first / "DONE"));
  // (the trainer let go of its run directory: the rerun's trainer can lock it)
  const auto rerun_c = test::run_process(dtstudy("run " + c + mpi));
  INFO(rerun_c.out);
  CHECK(rerun_c.status == 0);
  CHECK_THAT(rerun_c.out, Catch::Contains("[1/2] width-8: resuming"));
  REQUIRE(test::run_process(dtstudy("report " + root + "/c")).status == 0);
  const auto killed_c = nlohmann::json::parse(slurp(root + "/c/report.json"));
  REQUIRE(killed_c["runs"].size() == 2);
  CHECK(killed_c["runs"][0] == report_a["runs"][0]);  // the killed run's numbers as without the kill
  CHECK(killed_c["runs"][1] == report_a["runs"][1]);

  // Post-hoc EMA scores as dteval writes them (manifest.json with the weights file's phema time and
  // sigma_rel, alignment.json with the score): the report picks each run's best at its newest time.
  const auto score = [&](const std::string& name, double sigma, int64_t images, double value) {
    const fs::path d = first / "alignment" / name;
    fs::create_directories(d);
    std::ofstream(d / "manifest.json") << nlohmann::json{{"weights_file", "x.safetensors"},
                                                         {"phema", {{"sigma_rel", sigma}, {"at_images", images}}}};
    std::ofstream(d / "alignment.json") << nlohmann::json{{"score", value}, {"interval", {value - 0.1, value + 0.1}}};
  };
  score("phema_0.05", 0.05, 640, 0.41);
  score("phema_0.1", 0.10, 640, 0.47);
  score("phema_0.2", 0.20, 640, 0.44);
  score("phema_0.1-old", 0.10, 320, 0.90);                            // (an earlier time: not the run's end)
  std::ofstream(first / "alignment" / "step_00000080.json") << "{}";  // (not a post-hoc score)
  REQUIRE(test::run_process(dtstudy("report " + root + "/c")).status == 0);
  const auto report_c = nlohmann::json::parse(slurp(root + "/c/report.json"));
  const auto& posthoc = report_c["runs"][0]["posthoc_ema"];
  CHECK(posthoc["at_images"] == 640);
  CHECK(posthoc["scores"].size() == 3);
  CHECK(posthoc["best_sigma_rel"].get<double>() == Approx(0.10));
  CHECK(posthoc["best_alignment"].get<double>() == Approx(0.47));
  CHECK_FALSE(report_c["runs"][1].contains("posthoc_ema"));
  CHECK_THAT(slurp(root + "/c/report.md"),
             Catch::Contains("## Post-hoc EMA") && Catch::Contains("| width-8 | 640 | 0.05: 0.410, **0.1: 0.470**"));
}

TEST_CASE("dtstudy: a bad study is refused with exit 2 and nothing written") {
  const std::string root = test::scratch_dir("dtstudy-bad");
  auto refused = [&](const std::string& name, const std::string& text, const std::string& says) {
    const std::string file = root + "/" + name + ".toml";
    std::ofstream(file) << "dir = \"" << root << "/" << name << "\"\n" << text;
    for (const char* cmd : {"plan ", "run "}) {
      const auto r = test::run_process(dtstudy(cmd + file + " --no-measure"));
      INFO(cmd << name << ": " << r.out);
      CHECK(r.status == 2);
      CHECK_THAT(r.out, Catch::Contains(says));
      CHECK_FALSE(fs::exists(root + "/" + name));
    }
  };
  refused("unknown", "rnaks = 2\n[[axis]]\nname = \"w\"\nkey = \"lr\"\nvalues = [1e-3]\n", "unknown key 'rnaks'");
  refused("empty", "[[axis]]\nname = \"w\"\nkey = \"lr\"\nvalues = []\n", "has no values");
  refused("toobig", "[[axis]]\nname = \"w\"\nkey = \"model_set.model_channels\"\nvalues = [32, 16384]\n",
          "run 'w-16384'");
  refused("batch", "ranks = 3\n[[axis]]\nname = \"w\"\nkey = \"lr\"\nvalues = [1e-3]\n",
          "not divisible by the 3 ranks");
  // A run that fails (here the trainer is /bin/false) is recorded, the others still run, and
  // the exit status and status say so.
  const std::string failing = write_study(root, "failing");
  const auto failed = test::run_process(
      dtstudy("run " + failing + " --no-measure --mpirun " + std::string(MPIEXEC) + " --dtrainer /bin/false"));
  CHECK(failed.status == 1);
  CHECK_THAT(failed.out, Catch::Contains("[1/3] width-8: FAILED (exit 1") &&
                             Catch::Contains("[3/3] width-24: FAILED") &&
                             Catch::Contains("3 of 3 runs failed (width-8, width-16, width-24)"));
  const auto failed_status = test::run_process(dtstudy("status " + root + "/failing"));
  CHECK_THAT(failed_status.out, Catch::Contains("FAILED (1)") && Catch::Contains("3 failed"));
  const auto missing = test::run_process(dtstudy("status " + root + "/nothing"));
  CHECK(missing.status == 1);
  CHECK_THAT(missing.out, Catch::Contains("not a study directory"));
}
