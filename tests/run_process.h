#pragma once
// Runs a command line (stderr merged into stdout) and returns its exit code and output: the
// tools' tests drive the programs exactly as a user does.

#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <utility>

namespace dtrainer::test {

struct ProcessResult {
  int status = -1;  // exit code, -1 when killed by a signal
  std::string out;
};

inline ProcessResult run_process(const std::string& command) {
  ProcessResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace dtrainer::test
