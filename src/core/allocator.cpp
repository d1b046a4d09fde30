#include "dtrainer/core/allocator.h"

#include <dlfcn.h>
#include <gnu/libc-version.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace dtrainer {
namespace {

// A block that the optimiser cannot elide: written, and its address escapes through `sink`.
void* volatile sink = nullptr;

void* touched_block(size_t bytes) {
  void* p = std::malloc(bytes);
  if (p) std::memset(p, 1, bytes);
  sink = p;
  return p;
}

using MallCtl = int (*)(const char*, void*, size_t*, void*, size_t);

template <typename T>
bool read_ctl(MallCtl ctl, const char* name, T* out) {
  size_t size = sizeof(T);
  return ctl(name, out, &size, nullptr, 0) == 0;
}

AllocatorInfo jemalloc_info(MallCtl ctl) {
  AllocatorInfo a;
  a.name = "jemalloc";
  const char* version = nullptr;
  if (read_ctl(ctl, "version", &version) && version) a.version = version;
  // thread.allocated counts the bytes this thread allocated through jemalloc: a malloc() of 1 MiB
  // served by jemalloc moves it by at least that much.
  uint64_t before = 0, after = 0;
  const bool counted = read_ctl(ctl, "thread.allocated", &before);
  void* p = touched_block(1 << 20);
  if (counted && read_ctl(ctl, "thread.allocated", &after)) a.serves_malloc = after - before >= (1u << 20);
  std::free(p);
  ssize_t dirty = 0, muzzy = 0, max_fit = 0;
  size_t oversize = 0;
  unsigned arenas = 0;
  const char* thp = nullptr;
  if (read_ctl(ctl, "opt.dirty_decay_ms", &dirty) && read_ctl(ctl, "opt.muzzy_decay_ms", &muzzy) &&
      read_ctl(ctl, "opt.oversize_threshold", &oversize) && read_ctl(ctl, "opt.lg_extent_max_active_fit", &max_fit) &&
      read_ctl(ctl, "opt.narenas", &arenas) && read_ctl(ctl, "opt.thp", &thp))
    a.settings = "dirty_decay_ms " + std::to_string(dirty) + ", muzzy_decay_ms " + std::to_string(muzzy) +
                 ", oversize_threshold " + std::to_string(oversize) + ", lg_extent_max_active_fit " +
                 std::to_string(max_fit) + ", narenas " + std::to_string(arenas) + ", thp " + (thp ? thp : "?");
  return a;
}

AllocatorInfo mimalloc_info(void* version_fn, void* in_heap_fn) {
  AllocatorInfo a;
  a.name = "mimalloc";
  const int v = reinterpret_cast<int (*)()>(version_fn)();
  a.version = std::to_string(v / 100) + "." + std::to_string(v / 10 % 10) + "." + std::to_string(v % 10);
  void* p = touched_block(1 << 20);
  a.serves_malloc = in_heap_fn && reinterpret_cast<bool (*)(const void*)>(in_heap_fn)(p);
  std::free(p);
  return a;
}

}  // namespace

AllocatorInfo allocator_in_use() {
  if (auto ctl = reinterpret_cast<MallCtl>(dlsym(RTLD_DEFAULT, "mallctl"))) return jemalloc_info(ctl);
  if (void* v = dlsym(RTLD_DEFAULT, "mi_version")) return mimalloc_info(v, dlsym(RTLD_DEFAULT, "mi_is_in_heap_region"));
  AllocatorInfo a;
  a.name = "glibc";
  a.version = gnu_get_libc_version();
  a.serves_malloc = true;  // (no other allocator is loaded)
  return a;
}

AllocatorStats allocator_stats() {
  AllocatorStats s;
  auto ctl = reinterpret_cast<MallCtl>(dlsym(RTLD_DEFAULT, "mallctl"));
  if (!ctl) return s;
  uint64_t epoch = 1;  // (refreshes the statistics jemalloc caches)
  size_t len = sizeof(epoch);
  ctl("epoch", &epoch, &len, &epoch, len);
  size_t allocated = 0, resident = 0;
  if (read_ctl(ctl, "stats.allocated", &allocated) && read_ctl(ctl, "stats.resident", &resident))
    s.allocated = static_cast<int64_t>(allocated), s.resident = static_cast<int64_t>(resident);
  return s;
}

std::string describe(const AllocatorInfo& a) {
  std::string s = "allocator: " + a.name + " " + a.version;
  if (!a.settings.empty()) s += " (" + a.settings + ")";
  if (!a.serves_malloc) s += " -- loaded but NOT serving malloc (link it before libc, or LD_PRELOAD it)";
  return s;
}

}  // namespace dtrainer
