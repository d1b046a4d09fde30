#include "child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"

namespace dtrainer::study {
namespace {

std::vector<char*> c_args(const std::vector<std::string>& argv) {
  std::vector<char*> a;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  return a;
}

int exit_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int run_captured(const std::vector<std::string>& argv, std::string* out, bool with_stderr) {
  int fds[2];
  if (pipe(fds) != 0) throw Error(argv[0], "pipe: " + errno_message(errno));
  std::vector<char*> a = c_args(argv);
  const pid_t pid = fork();
  if (pid < 0) throw Error(argv[0], "fork: " + errno_message(errno));
  if (pid == 0) {
    dup2(fds[1], 1);
    const int null = open("/dev/null", O_RDWR);
    dup2(with_stderr ? fds[1] : null, 2);
    dup2(null, 0);
    close(fds[0]);
    close(fds[1]);
    execvp(a[0], a.data());
    _exit(127);
  }
  close(fds[1]);
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0 && out) out->append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return exit_status(status);
}

int start_logged(const std::vector<std::string>& argv, const std::string& log, int parent_death_signal) {
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(log, "cannot open the log: " + errno_message(errno));
  // (exec failure is reported through a close-on-exec pipe: nothing written means it started)
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw Error(argv[0], "pipe: " + errno_message(errno));
  std::vector<char*> a = c_args(argv);
  const pid_t pid = fork();
  if (pid < 0) throw Error(argv[0], "fork: " + errno_message(errno));
  if (pid == 0) {
    setpgid(0, 0);
    if (parent_death_signal) prctl(PR_SET_PDEATHSIG, parent_death_signal);
    const int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    execvp(a[0], a.data());
    const int err = errno;
    (void)!write(fds[1], &err, sizeof err);
    _exit(127);
  }
  setpgid(pid, pid);  // (also here: no race with a signal sent before the child ran)
  close(fd);
  close(fds[1]);
  int err = 0;
  ssize_t n;
  while ((n = read(fds[0], &err, sizeof err)) < 0 && errno == EINTR) {
  }
  close(fds[0]);
  if (n == static_cast<ssize_t>(sizeof err)) {
    int status = 0;
    waitpid(pid, &status, 0);
    throw Error(argv[0], "cannot start: " + errno_message(err));
  }
  return pid;
}

int poll_child(int pid) {
  int status = 0;
  const pid_t r = waitpid(pid, &status, WNOHANG);
  if (r == 0 || (r < 0 && errno == EINTR)) return -1;
  if (r < 0) return 1;
  return exit_status(status);
}

void signal_group(int pid, int signal) { kill(-pid, signal); }

std::string shell_line(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    const bool plain = !a.empty() && a.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                         "-_./=:,+@%") == std::string::npos;
    std::string q = a;
    if (!plain) {
      q = "'";
      for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
      q += "'";
    }
    out += (out.empty() ? "" : " ") + q;
  }
  return out;
}

}  // namespace dtrainer::study
