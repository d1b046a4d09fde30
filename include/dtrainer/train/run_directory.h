#pragma once
// The run directory as the trainer owns it: one trainer at a time (an exclusive lock, released by
// the kernel when the process dies), and every file in it written checked and atomically.
//
//   .lock            holder: host, pid, start time, command          (DirectoryLock)
//   config.toml      the resolved configuration, replaced atomically once the resume checks passed
//   metrics.jsonl    appended record by record; cut back to the resumed step, atomically
//   DONE             the run reached its last step (evaluated, sampled, checkpointed)
//   PREEMPTED        the run stopped early after a signal, with a checkpoint of that step: the
//                    job scripts requeue when they find it (slurm/launch.sh)
//
// Neither marker survives the start of a run that trains: a stale DONE or PREEMPTED never
// misleads a job script. Only rank 0 touches files; every other rank's calls do nothing.

#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "dtrainer/core/dir_lock.h"

namespace dtrainer::train {

enum class RunState { kNone, kDone, kPreempted };

class RunDirectory {
 public:
  // Rank 0 creates `dir` when missing and locks it (Error naming the holder when another trainer
  // has it), and removes temporaries a killed trainer left. Not collective: the caller agrees.
  RunDirectory(const std::filesystem::path& dir, int rank, const std::string& holder);

  const std::filesystem::path& path() const { return dir_; }
  static RunState state(const std::filesystem::path& dir);  // what the markers say (any rank, read-only)

  void write_config(const std::string& toml) const;
  void append_metrics(const nlohmann::json& record) const;
  void truncate_metrics(int64_t step) const;  // keeps the records of steps <= step
  // metrics.jsonl holds a record of `step` with `key` ("eval", "alignment"): rank 0's view.
  bool has_record(int64_t step, const std::string& key) const;
  void clear_markers() const;  // the run trains again: DONE and PREEMPTED go
  void mark_done(int64_t step) const;
  void mark_preempted(int64_t step, int signal) const;

 private:
  std::filesystem::path dir_;
  bool writer_;
  std::unique_ptr<DirectoryLock> lock_;
};

}  // namespace dtrainer::train
