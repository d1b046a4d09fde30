#pragma once
// Temporary files that never outlive their writer: a TempFileGuard removes its file when it goes
// out of scope unless released (the file was published), and a tool that calls
// remove_temp_files_on_signals() also removes every live guard's file when it is interrupted
// (SIGINT, SIGTERM, SIGHUP), then dies of that signal as it would have. The trainer does not
// install it: there these signals mean "checkpoint and stop" (train/preemption.h), and a killed
// trainer's leftovers are removed by the next run that takes the run directory's lock.

#include <string>

namespace dtrainer {

class TempFileGuard {
 public:
  explicit TempFileGuard(std::string path);
  ~TempFileGuard();  // removes the file unless released
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  void release() const;  // the file was renamed into place: keep whatever now has its name
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  mutable int slot_ = -1;  // in the signal handler's table; -1 when the table was full or released
  mutable bool released_ = false;
};

// Installs the handlers (once per process). For tools only.
void remove_temp_files_on_signals();

}  // namespace dtrainer
