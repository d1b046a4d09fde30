#include "dtrainer/core/blas_kernels.h"

#include <dlfcn.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <strings.h>

#include <cstdlib>

namespace dtrainer {
namespace {

// The widest instruction set of each OpenBLAS x86-64 kernel family (0: SSE-class, 1: AVX,
// 2: AVX2 + FMA, 3: AVX-512, 4: AVX-512 with BF16). Unknown names: -1 (left alone).
int isa_level(const std::string& core) {
  static const struct {
    const char* name;
    int level;
  } table[] = {{"Prescott", 0},  {"Core2", 0},      {"Penryn", 0},      {"Dunnington", 0},    {"Nehalem", 0},
               {"Atom", 0},      {"Opteron", 0},    {"Barcelona", 0},   {"Bobcat", 0},        {"Sandybridge", 1},
               {"Bulldozer", 1}, {"Piledriver", 1}, {"Steamroller", 1}, {"Excavator", 1},     {"Haswell", 2},
               {"Zen", 2},       {"SkylakeX", 3},   {"Cooperlake", 4},  {"SapphireRapids", 4}};
  for (const auto& e : table)
    if (strcasecmp(core.c_str(), e.name) == 0) return e.level;
  return -1;
}

int cpu_isa_level() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512) {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;  // CPUID leaf 7 sub-leaf 1: EAX bit 5 = AVX512_BF16
    const bool bf16 = __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && ((eax >> 5) & 1u);
    return bf16 ? 4 : 3;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
  if (__builtin_cpu_supports("avx")) return 1;
#endif
  return 0;
}

const char* kernels_for(int level) {
  switch (level) {
    case 4: return "Cooperlake";
    case 3: return "SkylakeX";
    case 2: return "Haswell";
    default: return nullptr;  // (no gain over what any OpenBLAS picks)
  }
}

}  // namespace

BlasKernels select_native_blas_kernels() {
  static const BlasKernels once = [] {  // (the first call decides; OPENBLAS_CORETYPE is then ours)
    using CoreName = char* (*)();
    using Config = char* (*)();
    using Reinit = void (*)();
    BlasKernels k;
    const auto corename = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
    const auto config = reinterpret_cast<Config>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
    if (!corename || !config) return k;  // another BLAS (or none loaded)
    k.library = config();
    Dl_info where{};
    if (dladdr(reinterpret_cast<void*>(corename), &where) && where.dli_fname) k.path = where.dli_fname;
    k.chosen = k.running = corename();
    if (const char* user = std::getenv("OPENBLAS_CORETYPE")) {
      k.note = std::string("OPENBLAS_CORETYPE=") + user + " set by the user";
      return k;
    }
    const int have = isa_level(k.chosen), cpu = cpu_isa_level();
    const char* target = kernels_for(cpu);
    if (have < 0 || !target || have >= cpu) return k;
    const auto quit = reinterpret_cast<Reinit>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
    const auto init = reinterpret_cast<Reinit>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
    if (!quit || !init) {
      k.note = "this OpenBLAS cannot re-select its kernels (not built with DYNAMIC_ARCH); set OPENBLAS_CORETYPE=" +
               std::string(target);
      return k;
    }
    // OpenBLAS's dynamic start-up reads OPENBLAS_CORETYPE; running it again with the variable set is
    // what loading the library with it set does (the variable then also reaches child processes).
    setenv("OPENBLAS_CORETYPE", target, 1);
    quit();
    init();
    k.running = corename();
    k.note = "re-selected: OpenBLAS did not recognise this " + std::string(cpu >= 3 ? "AVX-512" : "AVX2") +
             " CPU and chose " + k.chosen + "; OPENBLAS_CORETYPE overrides";
    return k;
  }();
  return once;
}

std::string describe(const BlasKernels& k) {
  if (k.library.empty()) return "BLAS: not OpenBLAS (kernels left to the library)";
  std::string s = "OpenBLAS kernels " + k.running;
  if (!k.note.empty()) s += " (" + k.note + ")";
  if (!k.path.empty()) s += " from " + k.path;
  return s;
}

}  // namespace dtrainer
