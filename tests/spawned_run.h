#pragma once
// A command started in the background, in its own process group, and stopped if the test leaves
// before reaping it (a failed REQUIRE throws): SIGTERM first, which mpirun forwards to its ranks,
// then SIGKILL to the whole group. Without this, a failure left `--steps 100000` runs training in
// the background for good.

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

extern char** environ;

namespace dtrainer::test {

class SpawnedRun {
 public:
  explicit SpawnedRun(const std::string& cmd) {
    // exec'd by sh, so the pid is the command's; stdin closed, as a background group must not read a terminal
    const std::string line = "exec " + cmd + " < /dev/null";
    const char* argv[] = {"/bin/sh", "-c", line.c_str(), nullptr};
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);  // own process group: mpirun and its ranks
    const int rc = posix_spawn(&pid_, "/bin/sh", nullptr, &attr, const_cast<char* const*>(argv), environ);
    posix_spawnattr_destroy(&attr);
    REQUIRE(rc == 0);
  }
  SpawnedRun(const SpawnedRun&) = delete;
  SpawnedRun& operator=(const SpawnedRun&) = delete;
  ~SpawnedRun() {
    if (pid_ <= 0) return;
    kill(-pid_, SIGCONT);  // (a test may have stopped part of it)
    kill(pid_, SIGTERM);
    for (int i = 0; i < 300; ++i) {  // up to 30 s for the preemption checkpoint
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, WNOHANG);
  }
  pid_t pid() const { return pid_; }
  void signal(int sig) const { REQUIRE(kill(pid_, sig) == 0); }
  // Waits for the command and returns its wait status.
  int wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
    return status;
  }
  // The exit status if it ended within `seconds`, -1 if it is still running then.
  int wait_for(double seconds) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

 private:
  pid_t pid_ = 0;
};

}  // namespace dtrainer::test
