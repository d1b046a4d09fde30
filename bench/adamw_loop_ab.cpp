// A/B of the host AdamW loop: the Kokkos lambda over elements (src/parallel/adamw.cpp, kept) against the
// restrict-qualified 8192-element chunks tried in e1fa94e and reverted (bench/RESULTS.md, "Weight averages").
// Build: g++ -O3 -fno-math-errno -std=c++17 -I/usr/include/trilinos bench/adamw_loop_ab.cpp \
//          /usr/lib/x86_64-linux-gnu/libtrilinos_kokkoscore.so -o /tmp/adamw_ab
#include <Kokkos_Core.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>
struct U {
  float* p;
  const float* g;
  float *m, *v;
  float b1, b2, decay, scale, step_size, inv, eps;
};
void old_kernel(int64_t n, const U& u) {
  float* p = u.p;
  const float* gp = u.g;
  float* mp = u.m;
  float* vp = u.v;
  const float b1 = u.b1, b2 = u.b2, decay = u.decay, scale = u.scale, step_size = u.step_size, inv = u.inv, eps = u.eps;
  Kokkos::parallel_for("old", Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace>(0, n), [=](int64_t i) {
    const float g = gp[i] * scale;
    const float mi = b1 * mp[i] + (1 - b1) * g;
    const float vi = b2 * vp[i] + (1 - b2) * g * g;
    const float pi = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv + eps);
    mp[i] = mi;
    vp[i] = vi;
    p[i] = pi;
  });
}
void range(int64_t b, int64_t e, const U& u) {
  float* __restrict__ p = u.p;
  const float* __restrict__ g = u.g;
  float* __restrict__ m = u.m;
  float* __restrict__ v = u.v;
  for (int64_t i = b; i < e; ++i) {
    const float gi = g[i] * u.scale;
    const float mi = u.b1 * m[i] + (1 - u.b1) * gi;
    const float vi = u.b2 * v[i] + (1 - u.b2) * gi * gi;
    p[i] = p[i] * u.decay - u.step_size * mi / (std::sqrt(vi) * u.inv + u.eps);
    m[i] = mi;
    v[i] = vi;
  }
}
void new_kernel(int64_t n, const U& u) {
  constexpr int64_t k = 8192;
  Kokkos::parallel_for("new", Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace>(0, (n + k - 1) / k),
                       [=](int64_t c) { range(c * k, std::min(n, (c + 1) * k), u); });
}
int main(int argc, char** argv) {
  Kokkos::ScopeGuard guard(argc, argv);
  for (int64_t n : {int64_t{1100000}, int64_t{16777216}, int64_t{67108864}}) {
    std::vector<float> p(n, 0.5f), g(n, 0.01f), m(n, 0.0f), v(n, 0.0f);
    for (int64_t i = 0; i < n; ++i) g[i] = 0.001f * static_cast<float>(i % 97) - 0.04f;
    U u{p.data(), g.data(), m.data(), v.data(), 0.9f, 0.999f, 1.0f, 1.0f, 1e-3f, 1.0f, 1e-8f};
    std::vector<double> to, tn;
    for (int it = 0; it < 41; ++it) {
      auto t0 = std::chrono::steady_clock::now();
      old_kernel(n, u);
      auto t1 = std::chrono::steady_clock::now();
      new_kernel(n, u);
      auto t2 = std::chrono::steady_clock::now();
      if (it)
        to.push_back(std::chrono::duration<double>(t1 - t0).count()),
            tn.push_back(std::chrono::duration<double>(t2 - t1).count());
    }
    std::sort(to.begin(), to.end());
    std::sort(tn.begin(), tn.end());
    const double bytes = 28.0 * n;  // p g m v read, p m v written
    std::printf("%10lld elements: old %.3f ms (%.1f GB/s)  new %.3f ms (%.1f GB/s)  ratio %.2f\n", (long long)n,
                to[20] * 1e3, bytes / to[20] / 1e9, tn[20] * 1e3, bytes / tn[20] / 1e9, to[20] / tn[20]);
  }
}
