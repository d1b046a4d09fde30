#include "dtrainer/core/temp_files.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace dtrainer {
namespace {

// A fixed table the signal handler can walk without allocating: each slot holds a path (a
// NUL-terminated copy) and whether it is in use. Writers are serialised by a mutex; the handler
// only reads published slots.
constexpr int kSlots = 64;
constexpr size_t kPathBytes = 4096;
struct Slot {
  std::atomic<bool> used{false};
  char path[kPathBytes];
};
Slot g_slots[kSlots];
std::mutex g_mutex;

extern "C" void remove_and_die(int sig) {
  for (auto& s : g_slots)
    if (s.used.load(std::memory_order_acquire)) ::unlink(s.path);  // (async-signal-safe)
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

TempFileGuard::TempFileGuard(std::string path) : path_(std::move(path)) {
  if (path_.size() >= kPathBytes) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  for (int i = 0; i < kSlots; ++i) {
    if (g_slots[i].used.load(std::memory_order_relaxed)) continue;
    std::memcpy(g_slots[i].path, path_.c_str(), path_.size() + 1);
    g_slots[i].used.store(true, std::memory_order_release);
    slot_ = i;
    return;
  }
}

TempFileGuard::~TempFileGuard() {
  if (slot_ >= 0) {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_slots[slot_].used.store(false, std::memory_order_release);
  }
  if (!released_) ::unlink(path_.c_str());
}

void TempFileGuard::release() const {
  released_ = true;
  if (slot_ < 0) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  g_slots[slot_].used.store(false, std::memory_order_release);
  slot_ = -1;
}

void remove_temp_files_on_signals() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = remove_and_die;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  });
}

}  // namespace dtrainer
