#include "dtrainer/core/library_cleanup.h"

#include <atomic>
#include <mutex>

namespace dtrainer {
namespace {
std::atomic<bool> g_forbidden{false};
std::mutex g_mutex;
std::string g_why;
}  // namespace

void forbid_library_cleanup(const std::string& why) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_forbidden) g_why = why;
  g_forbidden = true;
}

bool library_cleanup_forbidden() { return g_forbidden; }

const std::string& library_cleanup_forbidden_why() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_why;
}

}  // namespace dtrainer
