#include "dtrainer/core/remove_tree.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "dtrainer/core/error.h"

namespace dtrainer {
namespace {

// nftw's callback takes no context: the first failure of this thread's walk is kept here.
thread_local std::string walk_failure;

int remove_entry(const char* entry, const struct stat*, int type, struct FTW*) {
  // FTW_DNR (an unreadable directory) still gets its rmdir: it fails with the reason if not empty.
  (void)type;
  if (std::remove(entry) == 0 || errno == ENOENT) return 0;
  walk_failure = std::string(entry) + ": " + std::strerror(errno);
  return 1;  // stops the walk
}

}  // namespace

bool try_remove_tree(const std::filesystem::path& path, std::string* why) noexcept {
  try {
    struct stat st {};
    if (lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return true;
      if (why) *why = path.string() + ": " + std::strerror(errno);
      return false;
    }
    walk_failure.clear();
    // Depth first (children before their directory), physical (links are entries, not followed).
    const int rc = nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (rc == 0) return true;
    if (why) *why = !walk_failure.empty() ? walk_failure : path.string() + ": " + std::strerror(errno);
    return false;
  } catch (...) {  // (allocation failure building a message)
    return false;
  }
}

void remove_tree(const std::filesystem::path& path) {
  std::string why;
  if (!try_remove_tree(path, &why)) throw Error(path.string(), "cannot remove: " + why);
}

}  // namespace dtrainer
