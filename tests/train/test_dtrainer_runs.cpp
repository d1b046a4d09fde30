// End-to-end runs of the dtrainer binary under mpirun on a small synthetic dataset:
//  - 2-rank zero3 and 1-rank runs of the same global batch give the same per-step losses;
//  - stopping at step 10 and resuming gives steps 11-20 bitwise equal to an uninterrupted run,
//    and a 2-rank checkpoint resumed on 1 rank continues it to 1e-5;
//  - SIGTERM (to a rank) or SIGUSR1 (to mpirun) checkpoints and exits 0; a checkpoint left half-written
//    is skipped by --resume auto;
//  - a bad configuration exits 2 and writes nothing.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <fstream>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "spawned_run.h"
#include "train/dtrainer_runner.h"

using namespace dtrainer;
using test::command;
using test::data_root;
using test::kTinyUNet;
using test::run;
using test::slurp;
namespace fs = std::filesystem;

namespace {

// step -> loss of the training records in run_dir/metrics.jsonl.
std::map<int64_t, double> losses(const std::string& run_dir) {
  std::map<int64_t, double> out;
  for (const auto& [step, record] : test::training_records(run_dir)) out[step] = record.at("loss").get<double>();
  return out;
}

// The uninterrupted 20-step 1-rank run every comparison uses.
const std::map<int64_t, double>& reference_losses() {
  static const std::map<int64_t, double> ref = [] {
    const std::string dir = test::scratch_dir("ref");
    REQUIRE(run(1, "--steps 20 --run-dir " + dir, dir + ".log") == 0);
    return losses(dir);
  }();
  return ref;
}

}  // namespace

TEST_CASE("2-rank zero3 and 1-rank runs of the same global batch give the same per-step losses") {
  const auto& ref = reference_losses();
  REQUIRE(ref.size() == 20);
  const std::string dir = test::scratch_dir("zero3");
  REQUIRE(run(2, "--steps 20 --sharding zero3 --run-dir " + dir, dir + ".log") == 0);
  const auto got = losses(dir);
  REQUIRE(got.size() == 20);
  for (const auto& [step, loss] : ref) {
    INFO("step " << step);
    CHECK(got.at(step) == Approx(loss).epsilon(1e-5));
  }
  CHECK(ref.at(20) < ref.at(1));  // it learns
  // Every record (training and eval) carries fitlaws's axes; compute and D only grow.
  std::ifstream in(dir + "/metrics.jsonl");
  double last_c = 0, last_d = 0;
  int evals = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    INFO(line);
    for (const char* key : {"step", "params", "compute_gflops", "image_noun_pairs", "samples"}) CHECK(j.contains(key));
    CHECK(j["compute_gflops"].get<double>() >= last_c);
    CHECK(j["image_noun_pairs"].get<double>() >= last_d);
    last_c = j["compute_gflops"].get<double>();
    last_d = j["image_noun_pairs"].get<double>();
    evals += j.contains("eval") ? 1 : 0;
  }
  CHECK(evals == 1);  // eval_every 0: at the end only
}

TEST_CASE("channels-last activations follow the NCHW run's losses") {
  // Only the memory layout differs (and with it, possibly, the convolutions' summation order); the end-of-run
  // evaluation and sample grid go through the same forward.
  const auto& ref = reference_losses();
  const std::string dir = test::scratch_dir("channels-last");
  REQUIRE(run(1, "--steps 8 --channels-last --run-dir " + dir, dir + ".log") == 0);
  CHECK_THAT(slurp(dir + ".log"), Catch::Contains("channels-last activations"));
  const auto got = losses(dir);
  REQUIRE(got.size() == 8);
  for (const auto& [step, loss] : got) {
    INFO("step " << step);
    CHECK(loss == Approx(ref.at(step)).epsilon(1e-4));
  }
}

TEST_CASE("resume: steps 11-20 after a stop at 10 equal the uninterrupted run") {
  const auto& ref = reference_losses();
  SECTION("same rank count: bitwise") {
    const std::string dir = test::scratch_dir("resume1");
    REQUIRE(run(1, "--steps 10 --run-dir " + dir, dir + ".a.log") == 0);
    REQUIRE(fs::exists(dir + "/ckpt/step_00000010/COMPLETE"));
    REQUIRE(run(1, "--steps 20 --resume auto --run-dir " + dir, dir + ".b.log") == 0);
    CHECK_THAT(slurp(dir + ".b.log"), Catch::Contains("resumed from"));
    const auto got = losses(dir);
    REQUIRE(got.size() == 20);
    for (int64_t s = 11; s <= 20; ++s) {
      INFO("step " << s);
      CHECK(got.at(s) == ref.at(s));
    }
  }
  SECTION("a 2-rank zero3 checkpoint resumed on 1 rank: to 1e-5") {
    const std::string dir = test::scratch_dir("resume2to1");
    REQUIRE(run(2, "--steps 10 --sharding zero3 --run-dir " + dir, dir + ".a.log") == 0);
    REQUIRE(run(1, "--steps 20 --resume auto --run-dir " + dir, dir + ".b.log") == 0);
    const auto got = losses(dir);
    REQUIRE(got.size() == 20);
    for (int64_t s = 11; s <= 20; ++s) {
      INFO("step " << s);
      CHECK(got.at(s) == Approx(ref.at(s)).epsilon(1e-5));
    }
  }
}

TEST_CASE("a bf16 compute copy trains from fp32 masters and resumes bitwise") {
  const auto& ref = reference_losses();
  const std::string dir = test::scratch_dir("bf16"), resumed = test::scratch_dir("bf16-resumed");
  REQUIRE(run(1, "--steps 12 --compute-dtype bf16 --run-dir " + dir, dir + ".log") == 0);
  CHECK_THAT(slurp(dir + ".log"), Catch::Contains("compute in bf16"));
  const auto got = losses(dir);
  REQUIRE(got.size() == 12);
  // Step 1 is the initial weights' loss: bf16 rounding of the same computation, not the same bits.
  CHECK(got.at(1) != ref.at(1));
  CHECK(got.at(1) == Approx(ref.at(1)).epsilon(2e-2));
  CHECK(got.at(12) < 0.8 * got.at(1));  // it learns
  // The checkpoint holds the fp32 masters; the resumed run rounds them into the same compute copy.
  REQUIRE(run(1, "--steps 6 --compute-dtype bf16 --run-dir " + resumed, resumed + ".a.log") == 0);
  REQUIRE(run(1, "--steps 12 --compute-dtype bf16 --resume auto --run-dir " + resumed, resumed + ".b.log") == 0);
  const auto again = losses(resumed);
  REQUIRE(again.size() == 12);
  for (int64_t s = 7; s <= 12; ++s) {
    INFO("step " << s);
    CHECK(again.at(s) == got.at(s));
  }
}

TEST_CASE("--resume auto skips a checkpoint that was being written when the run was killed") {
  const std::string dir = test::scratch_dir("killed");
  REQUIRE(run(1, "--steps 10 --ckpt-every 5 --run-dir " + dir, dir + ".a.log") == 0);
  // What a kill during the next save leaves: a .tmp- directory, and (a crash between the rename
  // and anything else cannot produce it, but a hand-copied one can) a step directory without
  // its COMPLETE marker.
  fs::create_directories(dir + "/ckpt/.tmp-step_00000015");
  std::ofstream(dir + "/ckpt/.tmp-step_00000015/state.h5") << "partial";
  fs::create_directories(dir + "/ckpt/step_00000014");
  REQUIRE(run(1, "--steps 12 --resume auto --run-dir " + dir, dir + ".b.log") == 0);
  CHECK_THAT(slurp(dir + ".b.log"), Catch::Contains("step_00000010") && Catch::Contains("at step 10"));
  CHECK_FALSE(fs::exists(dir + "/ckpt/.tmp-step_00000015"));
  CHECK(fs::exists(dir + "/ckpt/step_00000012/COMPLETE"));
}

// Starts `cmd`, waits for 3 logged steps in run_dir, sends `sig`, and returns the exit status.
int interrupt_run(const std::string& cmd, const std::string& run_dir, int sig) {
  test::SpawnedRun child(cmd);
  bool started = false;
  for (int i = 0; i < 600 && !started; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    started = losses(run_dir).size() >= 3;
  }
  REQUIRE(started);
  child.signal(sig);
  return child.wait();
}

void check_preempted(int status, const std::string& dir, int expected_signal) {
  INFO(slurp(dir + ".log"));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(slurp(dir + ".log"), Catch::Contains("preempted"));
  const auto last = losses(dir).rbegin()->first;
  CHECK(fs::exists(dir + "/ckpt/step_" + std::string(8 - std::to_string(last).size(), '0') + std::to_string(last) +
                   "/COMPLETE"));
  // The marker the job scripts read (mpirun's exit code after a signal is not theirs to trust).
  CHECK(slurp(dir + "/PREEMPTED") ==
        "step " + std::to_string(last) + " signal " + std::to_string(expected_signal) + "\n");
  CHECK_FALSE(fs::exists(dir + "/DONE"));
}

TEST_CASE("preemption: a signal mid-run gives a complete checkpoint of the last step and exit 0") {
  SECTION("SIGINT to the rank (Ctrl-C on a rank started without mpirun)") {
    const std::string dir = test::scratch_dir("sigint");
    std::string cmd = command(1, "--steps 100000 --run-dir " + dir);
    cmd = cmd.substr(cmd.find(DTRAINER_PATH));
    check_preempted(interrupt_run(cmd + " > " + dir + ".log 2>&1", dir, SIGINT), dir, SIGINT);
  }
  SECTION("SIGTERM to the rank (what Slurm sends to every task)") {
    const std::string dir = test::scratch_dir("sigterm");
    // One rank started directly (MPI singleton): the signal reaches the rank itself.
    std::string cmd = command(1, "--steps 100000 --run-dir " + dir);
    cmd = cmd.substr(cmd.find(DTRAINER_PATH));
    check_preempted(interrupt_run(cmd + " > " + dir + ".log 2>&1", dir, SIGTERM), dir, SIGTERM);
  }
  SECTION("SIGUSR1 to mpirun, which forwards it to both ranks") {
    const std::string dir = test::scratch_dir("sigusr1");
    check_preempted(
        interrupt_run(command(2, "--steps 100000 --run-dir " + dir) + " > " + dir + ".log 2>&1", dir, SIGUSR1), dir,
        SIGUSR1);
  }
}

TEST_CASE("diverging training: non-finite steps are skipped, K in a row abort with diagnostics") {
  const std::string dir = test::scratch_dir("nan");
  // lr 1e12 without clipping: the weights blow up within a few steps, the loss becomes inf / NaN.
  const int rc = run(1, "--steps 40 --lr 1e12 --max-grad-norm 0 --max-bad-steps 3 --run-dir " + dir, dir + ".log");
  const std::string log = slurp(dir + ".log");
  INFO(log);
  CHECK(rc != 0);
  CHECK_THAT(log, Catch::Contains("update skipped"));
  CHECK_THAT(log,
             Catch::Contains("3 consecutive steps with a non-finite loss or gradient") && Catch::Contains("rank 0"));
}

TEST_CASE("skip_bad_samples is a trainer option, and the dropped samples are counted in metrics.jsonl") {
  const std::string dir = test::scratch_dir("skip-bad");
  REQUIRE(run(1, "--steps 3 --skip-bad-samples --run-dir " + dir, dir + ".log") == 0);
  const auto records = test::training_records(dir);
  REQUIRE(records.size() == 3);
  CHECK(records.at(3).at("skipped_samples").get<int64_t>() == 0);  // (clean data: the loader's own test drops bad ones)
  CHECK_THAT(slurp(dir + "/config.toml"), Catch::Contains("skip_bad_samples = true"));
}

TEST_CASE("a bad configuration exits 2 naming the key, and writes nothing") {
  const std::string root = test::scratch_dir("bad");
  const std::string toml = root + "/bad.toml";
  std::ofstream(toml) << "global_batch = 8\nlearning_rate = 1e-4\n";
  const std::string dir = root + "/run";
  CHECK(run(1, "--config " + toml + " --run-dir " + dir, root + "/a.log") == 2);
  CHECK_THAT(slurp(root + "/a.log"), Catch::Contains("learning_rate"));
  CHECK(run(2, "--micro-batch 3 --run-dir " + dir, root + "/b.log") == 2);
  CHECK_THAT(slurp(root + "/b.log"), Catch::Contains("micro_batch"));
  CHECK(run(1, "--model nosuch --run-dir " + dir, root + "/c.log") == 2);
  CHECK_THAT(slurp(root + "/c.log"), Catch::Contains("nosuch"));
  CHECK(run(1, "--model-set channel_mult=banana --run-dir " + dir, root + "/d.log") == 2);
  CHECK_THAT(slurp(root + "/d.log"), Catch::Contains("channel_mult"));
  CHECK_FALSE(fs::exists(dir));
}

TEST_CASE("transformer backbones train through the same registry, zero3 included") {
  for (const std::string model :
       {"pixart-h1152-d28", "mmdit-pp-xl2", "dit-xl2", "s2-att-dit-xl2", "s2-mdt-v2-xl2-class"}) {
    const std::string dir = test::scratch_dir("tf-" + model);
    std::string set = " --model " + model + " --model-set hidden_size=32 depth=2 num_heads=4";
    if (model == "dit-xl2") set += " conditioning=text";
    if (model == "s2-mdt-v2-xl2-class")
      set = " --model " + model +
            " --model-set hidden_size=32 depth=4 num_heads=4 "
            "decode_layer=2 conditioning=text";
    const std::string extra = model == "mmdit-pp-xl2" ? " --p-drop-control 0.2" : "";
    INFO(model << "\n" << slurp(dir + ".log"));
    REQUIRE(run(2, "--steps 4 --sharding zero3 --run-dir " + dir + extra, dir + ".log", set) == 0);
    const auto l = losses(dir);
    CHECK(l.size() == 4);
    for (const auto& [step, loss] : l) CHECK(std::isfinite(loss));
    CHECK(fs::exists(dir + "/samples/step_00000004.png"));
    if (model == "s2-mdt-v2-xl2-class") {  // MDT's masks are keyed per sample: 1 rank trains the same steps
      const std::string one = test::scratch_dir("tf-mdt-1");
      REQUIRE(run(1, "--steps 4 --run-dir " + one, one + ".log", set) == 0);
      const auto l1 = losses(one);
      for (const auto& [step, loss] : l) CHECK(l1.at(step) == Approx(loss).epsilon(1e-5));
    }
  }
  // A class-conditional preset cannot train on captioned data: a configuration error.
  const std::string dir = test::scratch_dir("tf-class");
  CHECK(run(1, "--steps 2 --run-dir " + dir + "/r", dir + ".log",
            " --model dit-xl2 --model-set hidden_size=32 depth=2 num_heads=4") == 2);
  CHECK_THAT(slurp(dir + ".log"), Catch::Contains("conditioning=text"));
}

TEST_CASE("every job config passes --dry-run") {
  std::vector<fs::path> configs;
  for (const auto& e : fs::directory_iterator(JOBS_DIR))
    if (e.path().extension() == ".toml") configs.push_back(e.path());
  std::sort(configs.begin(), configs.end());
  CHECK(configs.size() >= 18);
  // Two at a time (each is ~1 s of start-up on one core; the machine has two).
  // (scratch_dir is not thread-safe: every folder is made here first)
  std::vector<std::string> dirs;
  for (const auto& config : configs) dirs.push_back(test::scratch_dir("dry-" + config.stem().string()));
  const auto dry_run = [](const fs::path& config, const std::string& dir) {
    const std::string cmd = std::string(MPIEXEC) + " --allow-run-as-root -n 1 " + DTRAINER_PATH + " --config " +
                            config.string() + " --dry-run --run-dir " + dir + "/r > " + dir + "/log 2>&1";
    const int rc = std::system(cmd.c_str());
    return std::make_pair(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(dir + "/log"));
  };
  for (size_t i = 0; i < configs.size(); i += 2) {
    auto second = i + 1 < configs.size() ? std::async(std::launch::async, dry_run, configs[i + 1], dirs[i + 1])
                                         : std::future<std::pair<int, std::string>>();
    std::vector<std::pair<fs::path, std::pair<int, std::string>>> done = {{configs[i], dry_run(configs[i], dirs[i])}};
    if (second.valid()) done.push_back({configs[i + 1], second.get()});
    for (const auto& [config, result] : done) {
      INFO(config.string() << "\n" << result.second);
      CHECK(result.first == 0);
      CHECK_THAT(result.second, Catch::Contains("compute C") && Catch::Contains("memory/rank"));
    }
  }
}
