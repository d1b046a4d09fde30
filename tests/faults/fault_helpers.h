#pragma once
// What the fault tests share (tests/faults/test_faults_*.cpp): running a command with a bound,
// the write-fault injector in a chosen rank, and reading a run directory's state.

#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "run_process.h"
#include "spawned_run.h"
#include "train/dtrainer_runner.h"

namespace dtrainer::test::faults {

using test::command;
using test::run;
using test::slurp;
namespace fs = std::filesystem;

// LD_PRELOAD of the injector for every rank of an mpirun command (mpirun -x passes the variables).
inline std::string with_fault(const std::string& cmd, const std::string& path, const std::string& err, int64_t after,
                              int rank = -1) {
  std::string env = "-x LD_PRELOAD=" + std::string(DTFAULT_PATH) + " -x DT_FAULT_PATH=" + path +
                    " -x DT_FAULT_ERRNO=" + err + " -x DT_FAULT_AFTER=" + std::to_string(after) +
                    (rank >= 0 ? " -x DT_FAULT_RANK=" + std::to_string(rank) : "");
  const std::string at = "--oversubscribe";
  const size_t p = cmd.find(at);
  return cmd.substr(0, p + at.size()) + " " + env + cmd.substr(p + at.size());
}

inline int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

// `timeout` turns a hang into exit 124.
inline int run_bounded(const std::string& cmd, const std::string& log, int seconds = 90) {
  const int rc = std::system(("timeout " + std::to_string(seconds) + " " + cmd + " > " + log + " 2>&1").c_str());
  return exit_code(rc);
}

inline std::string step_dir(const std::string& run_dir, int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return run_dir + "/ckpt/" + buf;
}

inline bool validates(const std::string& ckpt) {
  return test::run_process(std::string(DTCKPT_PATH) + " validate " + ckpt).status == 0;
}

inline bool has_temporaries(const std::string& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(".tmp-", 0) == 0 || n.find(".tmp-") != std::string::npos) return true;
  }
  return false;
}

// Waits until run_dir's metrics.jsonl has `records` training records (or 60 s).
inline bool wait_for_steps(const std::string& run_dir, size_t records) {
  for (int i = 0; i < 600; ++i) {
    if (test::training_records(run_dir).size() >= records) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// The pids of mpirun's rank processes, by rank.
inline std::map<int, pid_t> ranks_of(pid_t mpirun) {
  std::map<int, pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = slurp(e.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    int ppid = 0;
    char state = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || ppid != mpirun) continue;
    std::ifstream env(e.path().string() + "/environ");
    for (std::string var; std::getline(env, var, '\0');)
      if (var.rfind("OMPI_COMM_WORLD_RANK=", 0) == 0) out[std::stoi(var.substr(21))] = std::stoi(name);
  }
  return out;
}

}  // namespace dtrainer::test::faults
