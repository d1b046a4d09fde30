#include "dtrainer/train/run_directory.h"

#include <sstream>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"

namespace fs = std::filesystem;

namespace dtrainer::train {

RunDirectory::RunDirectory(const fs::path& dir, int rank, const std::string& holder) : dir_(dir), writer_(rank == 0) {
  if (!writer_) return;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw Error(dir_.string(), "cannot create the run directory: " + ec.message());
  lock_ = std::make_unique<DirectoryLock>(dir_, holder);
  remove_stale_temporaries(dir_);  // (a killed trainer's; we hold the lock, nobody else writes here)
}

RunState RunDirectory::state(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "DONE", ec)) return RunState::kDone;
  if (fs::exists(dir / "PREEMPTED", ec)) return RunState::kPreempted;
  return RunState::kNone;
}

void RunDirectory::write_config(const std::string& toml) const {
  if (writer_) write_file_atomic(dir_ / "config.toml", toml);
}

void RunDirectory::append_metrics(const nlohmann::json& record) const {
  if (writer_) append_to_file(dir_ / "metrics.jsonl", record.dump() + "\n");
}

void RunDirectory::truncate_metrics(int64_t step) const {
  const fs::path path = dir_ / "metrics.jsonl";
  std::error_code ec;
  if (!writer_ || !fs::exists(path, ec)) return;
  std::istringstream in(read_file(path));
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    try {
      if (nlohmann::json::parse(line).value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const std::exception&) {  // a torn last line of a killed run
    }
  }
  write_file_atomic(path, kept);
}

bool RunDirectory::has_record(int64_t step, const std::string& key) const {
  const fs::path path = dir_ / "metrics.jsonl";
  std::error_code ec;
  if (!writer_ || !fs::exists(path, ec)) return false;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    try {
      const auto j = nlohmann::json::parse(line);
      if (j.contains(key) && j.value("step", int64_t{-1}) == step) return true;
    } catch (const std::exception&) {
    }
  }
  return false;
}

void RunDirectory::clear_markers() const {
  if (!writer_) return;
  for (const char* name : {"DONE", "PREEMPTED"}) {
    std::error_code ec;
    fs::remove(dir_ / name, ec);
    if (ec) throw Error((dir_ / name).string(), "cannot remove the stale marker: " + ec.message());
  }
  fsync_path(dir_);
}

void RunDirectory::mark_done(int64_t step) const {
  if (writer_) write_file_atomic(dir_ / "DONE", "step " + std::to_string(step) + "\n");
}

void RunDirectory::mark_preempted(int64_t step, int signal) const {
  if (writer_)
    write_file_atomic(dir_ / "PREEMPTED", "step " + std::to_string(step) + " signal " + std::to_string(signal) + "\n");
}

}  // namespace dtrainer::train
