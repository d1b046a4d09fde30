// The fault tests of ranks and signals (ctest -L faults; docs/RELIABILITY.md): a stopped rank and a
// rank stalled in its loader (the watchdog names them), a killed rank, signals to the job, and a run
// stopped between a checkpoint and its evaluation. (Storage and input faults: test_faults_storage.cpp.)
#include <catch2/catch.hpp>

#include "fault_helpers.h"

using namespace dtrainer;
using namespace dtrainer::test::faults;

TEST_CASE("a stopped rank (SIGSTOP) ends the job through the watchdog, naming the rank") {
  const std::string dir = test::scratch_dir("stopped-rank");
  test::SpawnedRun job(
      command(2, "--steps 100000 --ckpt-every 0 --watchdog-timeout 60 --watchdog-min 2 --watchdog-factor 5 --run-dir " +
                     dir) +
      " > " + dir + ".log 2>&1");
  REQUIRE(wait_for_steps(dir, 6));
  const auto ranks = ranks_of(job.pid());
  REQUIRE(ranks.count(1));
  REQUIRE(kill(ranks.at(1), SIGSTOP) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  const int status = job.wait_for(50);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string log = slurp(dir + ".log");
  INFO(log);
  REQUIRE(status != -1);  // ended, not hung
  CHECK(exit_code(status) != 0);
  CHECK(took < 30);
  CHECK_THAT(log, Catch::Contains("watchdog: step") && Catch::Contains("Did not arrive: rank 1 (no answer"));
}

TEST_CASE("a rank stalled in its loader (a hung file system) is named by the watchdog with where it is") {
  const std::string dir = test::scratch_dir("stalled-loader");
  // Rank 1's reads of the training shard stall for 120 s each after ~2 MB (start-up and some 100 steps): it stays in
  // 'data' while rank 0 waits in a collective.
  std::string cmd = command(2,
                            "--steps 100000 --ckpt-every 0 --prefetch 0 --watchdog-timeout 60 --watchdog-min 2 "
                            "--watchdog-factor 5 --run-dir " +
                                dir);
  cmd = with_fault(cmd, test::data_root() + "/train", "EIO", 2000000, 1);
  cmd.replace(cmd.find(" -x DT_FAULT_ERRNO"), 0, " -x DT_FAULT_STALL_S=120");
  test::SpawnedRun job(cmd + " > " + dir + ".log 2>&1");
  const int status = job.wait_for(60);
  const std::string log = slurp(dir + ".log");
  INFO(log);
  REQUIRE(status != -1);
  CHECK(exit_code(status) != 0);
  CHECK_THAT(log, Catch::Contains("Did not arrive: rank 1 (in step") && Catch::Contains("phase 'data'") &&
                      Catch::Contains("collectives issued where the others reached") &&
                      Catch::Contains("Waiting there: rank 0."));
}

TEST_CASE("a killed rank ends the job at once; the last checkpoint resumes") {
  const std::string dir = test::scratch_dir("killed-rank");
  test::SpawnedRun job(command(2, "--steps 100000 --ckpt-every 3 --run-dir " + dir) + " > " + dir + ".log 2>&1");
  REQUIRE(wait_for_steps(dir, 7));
  const auto ranks = ranks_of(job.pid());
  REQUIRE(ranks.count(0));
  REQUIRE(kill(ranks.at(0), SIGKILL) == 0);
  const int status = job.wait_for(20);
  REQUIRE(status != -1);
  CHECK(exit_code(status) != 0);
  CHECK_FALSE(fs::exists(dir + "/PREEMPTED"));  // (a failure: job scripts must not requeue it as a preemption)
  REQUIRE(run(1, "--steps 8 --run-dir " + dir, dir + ".b.log") == 0);
  CHECK_THAT(slurp(dir + ".b.log"), Catch::Contains("resumed from"));
}

TEST_CASE(
    "malformed job files and bad values are errors naming the file, line and column or the option; nothing is "
    "written") {
  const std::string root = test::scratch_dir("bad-input");
  const std::string dir = root + "/run";
  struct Case {
    std::string toml, args, expect;
  };
  const std::vector<Case> cases = {
      {"steps = [1,\n", "", ":1:"},
      {"steps = 5\nname = \"unterminated\n", "", ":2:"},
      {"steps = 5\nsteps = 6\n", "", ":2:"},
      {"[model]\nname = \"x\"\n", "", "sections are not supported"},
      {"steps = 99999999999999999999\n", "", ":1:"},
      {"lr = nan\n", "", "--lr: must be a finite number"},
      {"", "--steps 0", "--steps: must be at least 1, got 0"},
      {"", "--steps banana", "--steps: expected an integer, got 'banana'"},
      {"", "--steps 99999999999999999999", "out of range"},
      {"", "--steps 2.5", "--steps: expected an integer, got '2.5'"},
      {"", "--lr nan", "--lr: must be a finite number"},
      {"", "--lr 0", "--lr: must be greater than 0, got 0"},
      {"", "--max-grad-norm nan", "--max-grad-norm: must be a finite number, got nan (0 turns clipping off)"},
      {"", "--p-drop-text 1.5", "--p-drop-text: must be in [0, 1], got 1.5"},
      {"", "--seed -1", "--seed: expected a non-negative integer"},
      {"", "--steps 4611686018427387904 --global-batch 8", "overflow a 64-bit counter"},
      {"steps = \"10\"\n", "", "key 'steps' wants an integer, got a string"},
      {"", "--name ../../elsewhere", "name: '../../elsewhere' is not a run name"},
  };
  int i = 0;
  for (const Case& k : cases) {
    const std::string toml = root + "/job" + std::to_string(i++) + ".toml";
    std::ofstream(toml) << k.toml;
    const std::string args = (k.toml.empty() ? "" : "--config " + toml + " ") + k.args;
    const int rc = run(1, args + " --run-dir " + dir, root + "/log");
    const std::string log = slurp(root + "/log");
    INFO(args << "\n" << k.toml << "\n" << log);
    CHECK(rc == 2);
    CHECK_THAT(log, Catch::Contains(k.expect));
    if (!k.toml.empty() && k.expect[0] == ':') CHECK_THAT(log, Catch::Contains(toml + k.expect));
    CHECK_FALSE(fs::exists(dir));
  }
}

TEST_CASE(
    "every data set is checked against the model at start-up; a model that cannot fit is refused with the numbers") {
  const std::string root = test::scratch_dir("startup-checks");
  // An evaluation set of another image size.
  data::SynthConfig s;
  s.out_dir = root + "/eval8";
  s.images = 8;
  s.images_per_shard = 8;
  s.image_size = 8;
  s.text_dim = 32;
  s.max_tokens = 16;
  s.eval_prompts = 2;
  data::synthesize(s);
  std::string cmd = command(1, "--steps 2 --run-dir " + root + "/run");
  cmd.replace(cmd.find(test::data_root() + "/eval"), (test::data_root() + "/eval").size(), root + "/eval8");
  int rc = run_bounded(cmd, root + "/a.log");
  std::string log = slurp(root + "/a.log");
  INFO(log);
  CHECK(rc == 2);
  CHECK_THAT(log, Catch::Contains("eval_data " + root + "/eval8") &&
                      Catch::Contains("latents are [3, 8, 8] but the model takes [3, 16, 16]"));
  CHECK_FALSE(fs::exists(root + "/run"));
  // sdxl on these images: ~2.6 B parameters, far beyond this machine.
  rc = run(1, "--steps 2 --run-dir " + root + "/big", root + "/b.log", " --model sdxl");
  log = slurp(root + "/b.log");
  INFO(log);
  CHECK(rc == 2);
  CHECK_THAT(log, Catch::Contains("memory: the plan needs") && Catch::Contains("zero3") &&
                      Catch::Contains("--ignore-memory-check"));
  CHECK_FALSE(fs::exists(root + "/big"));
}

TEST_CASE("a run stopped between a checkpoint and its evaluation makes the evaluation on resume, once") {
  const std::string dir = test::scratch_dir("catch-up");
  REQUIRE(run(1, "--steps 4 --ckpt-every 2 --eval-every 2 --run-dir " + dir, dir + ".a.log") == 0);
  // What a kill right after the last checkpoint leaves: no evaluation record of step 4, no samples, no DONE.
  std::string kept;
  double eval4 = 0;
  {
    std::ifstream in(dir + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line);
      if (j.value("eval", false) && j["step"] == 4) {
        eval4 = j["eval_loss"].get<double>();
        continue;
      }
      kept += line + "\n";
    }
  }
  std::ofstream(dir + "/metrics.jsonl", std::ios::trunc) << kept;
  fs::remove(dir + "/DONE");
  fs::remove(dir + "/samples/step_00000004.png");
  REQUIRE(run(1, "--steps 4 --ckpt-every 2 --eval-every 2 --run-dir " + dir, dir + ".b.log") == 0);
  INFO(slurp(dir + ".b.log"));
  int evals4 = 0;
  std::ifstream in(dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("eval", false) && j["step"] == 4) {
      ++evals4;
      CHECK(j["eval_loss"].get<double>() == eval4);  // the same weights, the same fixed noise: the same number
    }
  }
  CHECK(evals4 == 1);
  CHECK(fs::exists(dir + "/samples/step_00000004.png"));
  CHECK(fs::exists(dir + "/DONE"));
  // Run again: complete, nothing added.
  const std::string metrics = slurp(dir + "/metrics.jsonl");
  REQUIRE(run(1, "--steps 4 --run-dir " + dir, dir + ".c.log") == 0);
  CHECK(slurp(dir + "/metrics.jsonl") == metrics);
}
