// The fused AdamW kernel against LibTorch's own torch::optim::AdamW, and the EMA / clipping helpers.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/parallel/adamw.h"

using namespace dtrainer;
using namespace dtrainer::parallel;

TEST_CASE("fused AdamW matches torch::optim::AdamW step for step") {
  for (double wd : {0.0, 0.03}) {
    INFO("weight decay " << wd);
    torch::manual_seed(1);
    const int64_t n = 10007;
    torch::Tensor ref = torch::randn({n}).requires_grad_(true);
    torch::Tensor p = ref.detach().clone(), m = torch::zeros({n}), v = torch::zeros({n});
    torch::Tensor copy = torch::empty({n}, torch::kBFloat16);
    torch::optim::AdamW opt({ref}, torch::optim::AdamWOptions(3e-3).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd));
    AdamWConfig c;
    c.lr = 3e-3;
    c.beta2 = 0.95;
    c.weight_decay = wd;
    for (int step = 1; step <= 5; ++step) {
      const torch::Tensor g = torch::randn({n}) * (1.0 / step);
      ref.mutable_grad() = g.clone();
      opt.step();
      adamw_step(p, g, m, v, step, c, 1.0, copy);
      CHECK(torch::allclose(p, ref.detach(), 1e-5, 1e-7));
    }
    CHECK(torch::equal(copy, p.to(torch::kBFloat16)));
  }
}

TEST_CASE("grad_scale is the same as scaling the gradient") {
  torch::manual_seed(2);
  torch::Tensor p1 = torch::randn({100}), p2 = p1.clone(), m1 = torch::zeros({100}), m2 = m1.clone(), v1 = m1.clone(),
                v2 = m1.clone();
  const torch::Tensor g = torch::randn({100});
  adamw_step(p1, g, m1, v1, 1, {}, 0.25);
  adamw_step(p2, g * 0.25, m2, v2, 1, {});
  CHECK(torch::allclose(p1, p2));
  CHECK(torch::allclose(m1, m2));
}

TEST_CASE("EMA, gradient norm and clipping follow their definitions") {
  torch::Tensor e = torch::ones({8}), p = torch::full({8}, 3.0f);
  ema_update(e, p, 0.9);
  CHECK(torch::allclose(e, torch::full({8}, 0.9f * 1 + 0.1f * 3)));
  CHECK(global_grad_norm({torch::full({4}, 3.0f), torch::full({9}, 4.0f / 3)}, nullptr) ==
        Approx(std::sqrt(36.0 + 16.0)));
  CHECK(clip_factor(10.0, 1.0) == Approx(0.1).epsilon(1e-6));
  CHECK(clip_factor(0.5, 1.0) == 1.0);
  CHECK(clip_factor(10.0, 0.0) == 1.0);
}

TEST_CASE("mismatched optimizer tensors are refused") {
  CHECK_THROWS_WITH(adamw_step(torch::zeros({4}), torch::zeros({5}), torch::zeros({4}), torch::zeros({4}), 1, {}),
                    Catch::Contains("adamw.grad"));
  CHECK_THROWS_WITH(adamw_step(torch::zeros({4}), torch::zeros({4}), torch::zeros({4}), torch::zeros({4}), 0, {}),
                    Catch::Contains("steps count from 1"));
}

// The host kernels run in chunks on LibTorch's pool: the same result on 1 and on several threads,
// over a shard of many chunks and a ragged end, and the norm equal to an fp64 sum of its own.
TEST_CASE("the host update, average and norm do not depend on the thread count") {
  const int saved = at::get_num_threads();
  torch::manual_seed(3);
  const int64_t n = (1 << 20) + 12345;
  const torch::Tensor p0 = torch::randn({n}), g = torch::randn({n}) * 1e-2, e0 = torch::randn({n});
  AdamWConfig c;
  c.weight_decay = 0.03;
  struct Result {
    torch::Tensor p, m, v, e;
    double norm;
  };
  const auto run = [&](int threads) {
    at::set_num_threads(threads);
    Result r{p0.clone(), torch::zeros({n}), torch::zeros({n}), e0.clone(), 0};
    for (int step = 1; step <= 3; ++step) adamw_step(r.p, g, r.m, r.v, step, c, 0.5, {}, {{r.e, 0.99}});
    r.norm = global_grad_norm({g, p0}, nullptr);
    return r;
  };
  const Result one = run(1), four = run(4);
  at::set_num_threads(saved);
  CHECK(torch::equal(one.p, four.p));
  CHECK(torch::equal(one.m, four.m));
  CHECK(torch::equal(one.v, four.v));
  CHECK(torch::equal(one.e, four.e));
  CHECK(one.norm == four.norm);  // bitwise: the blocks are added in one order
  const double expected =
      std::sqrt(g.to(torch::kFloat64).pow(2).sum().item<double>() + p0.to(torch::kFloat64).pow(2).sum().item<double>());
  CHECK(one.norm == Approx(expected).epsilon(1e-12));
  // and the update itself is still PyTorch's AdamW at this size (one step, one thread)
  torch::Tensor ref = p0.clone().requires_grad_(true);
  torch::optim::AdamW opt({ref}, torch::optim::AdamWOptions(c.lr).weight_decay(c.weight_decay));
  ref.mutable_grad() = g * 0.5;
  opt.step();
  at::set_num_threads(4);
  torch::Tensor p = p0.clone(), m = torch::zeros({n}), v = torch::zeros({n});
  adamw_step(p, g, m, v, 1, c, 0.5);
  at::set_num_threads(saved);
  CHECK(torch::allclose(p, ref.detach(), 1e-5, 1e-7));
}
