#include "dtrainer/core/file_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <regex>

#include "dtrainer/core/error.h"
#include "dtrainer/core/temp_files.h"

namespace fs = std::filesystem;

namespace dtrainer {
namespace {

const char* errno_name(int err) {
  switch (err) {
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EROFS: return "EROFS";
    case EIO: return "EIO";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EISDIR: return "EISDIR";
    case ENOTDIR: return "ENOTDIR";
    case EFBIG: return "EFBIG";
    case EMFILE: return "EMFILE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EXDEV: return "EXDEV";
    case EBUSY: return "EBUSY";
    default: return nullptr;
  }
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// write() until everything is written; errno of the failure otherwise.
int write_all(int fd, std::string_view text) {
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    p += n;
    left -= static_cast<size_t>(n);
  }
  return 0;
}

fs::path parent_or_dot(const fs::path& p) { return p.has_parent_path() ? p.parent_path() : fs::path("."); }

}  // namespace

std::string errno_message(int err) {
  const char* name = errno_name(err);
  return std::string(std::strerror(err)) + (name ? std::string(" (") + name + ")" : "");
}

fs::path temporary_path(const fs::path& path) { return path.string() + ".tmp-" + std::to_string(::getpid()); }

void fsync_path(const fs::path& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw Error(path.string(), "cannot open to sync: " + errno_message(errno));
  // (EINVAL: a file system that cannot sync directories; nothing to wait for there)
  if (::fsync(f.fd) != 0 && errno != EINVAL) throw Error(path.string(), "cannot sync to disk: " + errno_message(errno));
}

void publish_file(const fs::path& tmp, const fs::path& path) {
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(path.string(), "cannot move " + tmp.string() + " into place: " + errno_message(err));
  }
  fsync_path(parent_or_dot(path));
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  const fs::path tmp = temporary_path(path);
  const TempFileGuard guard(tmp.string());  // (removed on failure, and by the tools' signal cleanup)
  {
    Fd f;
    f.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f.fd < 0) throw Error(path.string(), "cannot create " + tmp.filename().string() + ": " + errno_message(errno));
    if (const int err = write_all(f.fd, contents)) throw Error(path.string(), "cannot write: " + errno_message(err));
    if (::fsync(f.fd) != 0) throw Error(path.string(), "cannot write (sync): " + errno_message(errno));
    const int fd = f.fd;
    f.fd = -1;
    if (::close(fd) != 0) throw Error(path.string(), "cannot write (close): " + errno_message(errno));
  }
  publish_file(tmp, path);
  guard.release();
}

void append_to_file(const fs::path& path, std::string_view text, bool durable) {
  Fd f;
  f.fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (f.fd < 0) throw Error(path.string(), "cannot open for appending: " + errno_message(errno));
  struct stat st {};
  const bool sized = ::fstat(f.fd, &st) == 0;
  if (const int err = write_all(f.fd, text)) {
    if (sized && ::ftruncate(f.fd, st.st_size) != 0) {  // (a torn last record is cut away; readers skip one anyway)
    }
    throw Error(path.string(), "cannot append: " + errno_message(err));
  }
  if (durable && ::fsync(f.fd) != 0) throw Error(path.string(), "cannot sync to disk: " + errno_message(errno));
  const int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) throw Error(path.string(), "cannot append (close): " + errno_message(errno));
}

std::string diagnose_write_failure(const fs::path& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) == 0 && (st.f_flag & ST_RDONLY)) return "the file system is read-only";
  const fs::path probe = dir / (".write-probe-" + std::to_string(::getpid()));
  Fd f;
  f.fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f.fd < 0) return errno_message(errno);
  static const std::string block(1 << 16, '\0');
  const int err = write_all(f.fd, block);
  const int sync_err = err == 0 && ::fsync(f.fd) != 0 ? errno : 0;
  ::close(f.fd);
  f.fd = -1;
  ::unlink(probe.c_str());
  if (err) return errno_message(err);
  if (sync_err) return errno_message(sync_err);
  return "cause unknown: other writes to " + dir.string() + " succeed (a transient I/O error?)";
}

std::string read_file(const fs::path& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) throw Error(path.string(), "cannot open: " + errno_message(errno));
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(f.fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(path.string(), "cannot read: " + errno_message(errno));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

int remove_stale_temporaries(const fs::path& dir) noexcept {
  int removed = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  static const std::regex tmp_name(".*\\.tmp-[0-9]+");
  try {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (std::regex_match(name, tmp_name) && ::unlink((dir / name).c_str()) == 0) ++removed;
    }
  } catch (...) {
  }
  ::closedir(d);
  return removed;
}

}  // namespace dtrainer
