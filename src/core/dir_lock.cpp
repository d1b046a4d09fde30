#include "dtrainer/core/dir_lock.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <string>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"

namespace dtrainer {
namespace {

std::string holder_text(const std::string& what) {
  char host[256] = "?";
  ::gethostname(host, sizeof host - 1);
  const std::time_t now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  return "pid " + std::to_string(::getpid()) + " on " + host + " since " + when + " (" + what + ")";
}

}  // namespace

DirectoryLock::DirectoryLock(const std::filesystem::path& dir, const std::string& what) : path_(dir / ".lock") {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(dir.string(), "cannot create the lock file .lock: " + errno_message(errno));
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;  // (l_start = l_len = 0: the whole file)
  int rc = ::fcntl(fd_, F_OFD_SETLK, &fl);
  if (rc != 0 && errno == EINVAL) rc = ::fcntl(fd_, F_SETLK, &fl);  // (a kernel without OFD locks)
  if (rc != 0) {
    const int err = errno;
    std::string holder;
    try {
      holder = read_file(path_);
    } catch (const Error&) {
    }
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd_);
    fd_ = -1;
    if (err == EAGAIN || err == EACCES)
      throw Error(dir.string(),
                  "in use by another process: " + (holder.empty() ? std::string("(holder unknown)") : holder) +
                      "; two processes must not write one folder at once: wait for it to end, or choose another folder "
                      "(dtrainer --run-dir, dtdata encode --out, a study of its own)");
    throw Error(dir.string(), "cannot lock .lock: " + errno_message(err));
  }
  // The holder's description is for the messages of refused processes; the lock is what counts,
  // so a file system that refuses the write (full disk) does not refuse the lock.
  const std::string text = holder_text(what) + "\n";
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // (closing the description releases the lock)
}

}  // namespace dtrainer
