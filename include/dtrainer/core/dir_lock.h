#pragma once
// An exclusive lock on a directory, held for the life of the object: an open-file-description
// lock (fcntl F_OFD_SETLK) on DIR/.lock, which the kernel releases when the process dies however
// it dies, so a stale lock never blocks the next run. The file names the holder (host, pid, start
// time, what) so that a refused second process can say who has the directory.

#include <filesystem>
#include <string>

namespace dtrainer {

class DirectoryLock {
 public:
  // Locks `dir` (which must exist), recording `what` (e.g. "dtrainer --config jobs/x.toml") as the
  // holder. Throws Error naming the directory and the holder when another process has it, or the
  // cause when the lock file cannot be created.
  DirectoryLock(const std::filesystem::path& dir, const std::string& what);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace dtrainer
