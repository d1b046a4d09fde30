// What every dtrainer program runs on (cmake/ProgramRuntime.cmake): the allocator really serves
// malloc with its settings, freed memory is reused without faulting again, and OpenBLAS runs kernels
// of the CPU's instruction set that multiply correctly. This test executable is linked like the tools.
#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "dtrainer/core/allocator.h"
#include "dtrainer/core/blas_kernels.h"

#include <dlfcn.h>

using namespace dtrainer;

namespace {

long minor_faults() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return r.ru_minflt;
}

void* volatile keep = nullptr;

}  // namespace

TEST_CASE("the configured allocator serves malloc, with its settings") {
  const AllocatorInfo a = allocator_in_use();
  const std::string configured = configured_allocator();
  CHECK(a.name == (configured == "system" ? "glibc" : configured));
  CHECK(a.serves_malloc);
  CHECK_FALSE(a.version.empty());
  if (a.name == "jemalloc") {
    // (src/core/allocator_settings.cpp's malloc_conf reached jemalloc: its own report of its options)
    CHECK(a.settings.find("dirty_decay_ms -1") != std::string::npos);
    CHECK(a.settings.find("oversize_threshold 0") != std::string::npos);
  }
  CHECK(describe(a).find("allocator: " + a.name) == 0);
}

TEST_CASE("a freed 64 MiB block is reused without page-faulting it again") {
  if (allocator_in_use().name != "jemalloc") {
    WARN("skipped: the reuse settings are jemalloc's (DT_ALLOCATOR=jemalloc)");
    return;
  }
  const size_t bytes = 64u << 20;
  const auto touch_once = [&] {
    char* p = static_cast<char*>(std::malloc(bytes));
    REQUIRE(p != nullptr);
    const long before = minor_faults();
    std::memset(p, 7, bytes);
    const long faults = minor_faults() - before;
    keep = p;
    std::free(p);
    return faults;
  };
  touch_once();  // first use: its pages fault in (at most bytes / 4 KiB)
  const long again = touch_once();
  // glibc maps a fresh block for this size each time: 16384 faults of 4 KiB pages (or 32 of 2 MiB).
  CHECK(again <= 4);
}

TEST_CASE("OpenBLAS runs kernels of the CPU's instruction set, and they multiply correctly") {
  const BlasKernels k = select_native_blas_kernels();
  if (k.library.empty()) {
    WARN("skipped: the BLAS is not OpenBLAS");
    return;
  }
  CHECK(select_native_blas_kernels().running == k.running);  // (a second call changes nothing)
  CHECK(describe(k).find("OpenBLAS kernels " + k.running) == 0);
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && !std::getenv("DT_TEST_USER_CORETYPE"))
    CHECK((k.running == "SkylakeX" || k.running == "Cooperlake" || k.running == "SapphireRapids"));
#endif
  // sgemm through the BLAS interface against a double-precision loop.
  using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);
  const auto sgemm = reinterpret_cast<Sgemm>(dlsym(RTLD_DEFAULT, "sgemm_"));
  REQUIRE(sgemm != nullptr);
  const int n = 96;
  std::vector<float> a(n * n), b(n * n), c(n * n, 0.f);
  for (int i = 0; i < n * n; ++i)
    a[i] = static_cast<float>((i * 37 % 101) - 50) / 50.f, b[i] = static_cast<float>((i * 53 % 97) - 48) / 48.f;
  const float one = 1.f, zero = 0.f;
  sgemm("N", "N", &n, &n, &n, &one, a.data(), &n, b.data(), &n, &zero, c.data(), &n);
  double worst = 0;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) {
      double ref = 0;  // column-major: c(i, j) = sum_l a(i, l) b(l, j)
      for (int l = 0; l < n; ++l) ref += static_cast<double>(a[i + l * n]) * b[l + j * n];
      worst = std::max(worst, std::abs(ref - c[i + j * n]));
    }
  CHECK(worst < 1e-4);
}
