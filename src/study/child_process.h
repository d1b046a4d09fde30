#pragma once
// Child processes for dtstudy: a command whose output is captured (git, sbatch), and a long one
// (mpirun) with its output appended to a log, in its own process group so that a signal meant for
// it reaches all of it and none meant for dtstudy does by accident.

#include <string>
#include <vector>

namespace dtrainer::study {

// Runs argv[0] (searched in PATH) with its stdout captured into *out (stderr too when
// `with_stderr`). Returns the exit status (127: not found, 128 + n: killed by signal n).
int run_captured(const std::vector<std::string>& argv, std::string* out, bool with_stderr = false);

// Starts argv with stdout and stderr appended to `log` and stdin from /dev/null, as the leader of
// a new process group; `parent_death_signal` (non-zero) is sent to it if this process dies first.
// Returns its pid; throws Error naming the program when it cannot start.
int start_logged(const std::vector<std::string>& argv, const std::string& log, int parent_death_signal = 0);

// The exit status of a finished child as run_captured reports it; -1 while it runs (no wait).
int poll_child(int pid);

// Signals the child's whole process group.
void signal_group(int pid, int signal);

// Shell-quoted command line (for commands.sh and messages).
std::string shell_line(const std::vector<std::string>& argv);

}  // namespace dtrainer::study
