#include "dtrainer/parallel/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "dtrainer/core/error.h"

namespace dtrainer::parallel {
namespace {

// The host kernels run on LibTorch's intra-op pool (at::parallel_for: the threads the rank computes
// with, compute_threads.h), in chunks of at least this many elements. (They ran on Kokkos's host
// space before; Debian's Kokkos is built Serial only, so at 2 threads the update ran on one core:
// measured 1.15 s a step on sdxl-c128 at 1 and at 2 threads; bench/RESULTS.md.)
constexpr int64_t kGrain = 1 << 16;

void check_flat(const torch::Tensor& t, int64_t n, torch::ScalarType dtype, const char* name) {
  if (!t.defined() || t.dim() != 1 || t.numel() != n || !t.is_contiguous() || t.scalar_type() != dtype)
    throw Error(std::string("adamw.") + name, "expected a contiguous flat " + std::string(c10::toString(dtype)) +
                                                  " tensor of " + std::to_string(n) + " elements");
}

}  // namespace

void adamw_step(torch::Tensor param, const torch::Tensor& grad, torch::Tensor m, torch::Tensor v, int64_t step,
                const AdamWConfig& c, double grad_scale, torch::Tensor bf16_copy,
                const std::vector<WeightAverage>& averages) {
  const int64_t n = param.numel();
  check_flat(param, n, torch::kFloat32, "param");
  check_flat(grad, n, torch::kFloat32, "grad");
  check_flat(m, n, torch::kFloat32, "exp_avg");
  check_flat(v, n, torch::kFloat32, "exp_avg_sq");
  if (bf16_copy.defined()) check_flat(bf16_copy, n, torch::kBFloat16, "bf16_copy");
  for (const WeightAverage& a : averages) check_flat(a.avg, n, torch::kFloat32, "average");
  if (step < 1) throw Error("adamw.step", "steps count from 1");
  const double bc1 = 1 - std::pow(c.beta1, static_cast<double>(step)),
               bc2 = 1 - std::pow(c.beta2, static_cast<double>(step));
  const float b1 = static_cast<float>(c.beta1), b2 = static_cast<float>(c.beta2);
  const float decay = static_cast<float>(1 - c.lr * c.weight_decay), scale = static_cast<float>(grad_scale);
  const float step_size = static_cast<float>(c.lr / bc1), inv_sqrt_bc2 = static_cast<float>(1 / std::sqrt(bc2));
  const float eps = static_cast<float>(c.eps);
  if (param.is_cuda()) {  // the same arithmetic as torch ops on the device
    const torch::Tensor g = grad * scale;
    param.mul_(decay);
    m.mul_(b1).add_(g, 1 - b1);
    v.mul_(b2).addcmul_(g, g, 1 - b2);
    param.addcdiv_(m, v.sqrt().mul_(inv_sqrt_bc2).add_(eps), -step_size);
    if (bf16_copy.defined()) bf16_copy.copy_(param);
    for (const WeightAverage& a : averages) ema_update(a.avg, param, a.decay);
    return;
  }
  float* p = param.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  float* mp = m.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  at::parallel_for(0, n, kGrain, [=](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float g = gp[i] * scale;
      const float mi = b1 * mp[i] + (1 - b1) * g;
      const float vi = b2 * vp[i] + (1 - b2) * g * g;
      // decoupled weight decay, then the bias-corrected Adam step (PyTorch AdamW)
      const float pi = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
      mp[i] = mi;
      vp[i] = vi;
      p[i] = pi;
    }
  });
  // The averages as passes of their own: measured as fast as, or faster than, carrying them in the
  // update's loop (whose many memory streams defeat the prefetcher; bench/RESULTS.md).
  for (const WeightAverage& a : averages) ema_update(a.avg, param, a.decay);
  if (bf16_copy.defined()) bf16_copy.copy_(param);  // a separate vectorised pass keeps the update loop branch-free
}

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define DT_FUSED_DEVICE_ADAMW 1
#else
#define DT_FUSED_DEVICE_ADAMW 0
#endif

void adamw_step_on_device(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
                          const std::vector<torch::Tensor>& m, const std::vector<torch::Tensor>& v,
                          torch::Tensor step_count, const AdamWConfig& c, const torch::Tensor& grad_divisor,
                          const torch::Tensor& skip, const std::vector<torch::Tensor>& bf16_copies) {
  const size_t n = params.size();
  if (grads.size() != n || m.size() != n || v.size() != n || (!bf16_copies.empty() && bf16_copies.size() != n))
    throw Error("adamw", "adamw_step_on_device: params, grads, m, v (and bf16 copies) must come in equal numbers");
  for (const torch::Tensor* t : {static_cast<const torch::Tensor*>(&step_count), &grad_divisor, &skip})
    if (!t->defined() || !t->is_cuda() || t->numel() != 1 || t->scalar_type() != torch::kFloat32)
      throw Error("adamw",
                  "adamw_step_on_device: step_count, grad_divisor and skip must be one fp32 element on the device");
  for (size_t i = 0; i < n; ++i) {
    const int64_t len = params[i].numel();
    check_flat(params[i], len, torch::kFloat32, "param");
    check_flat(grads[i], len, torch::kFloat32, "grad");
    check_flat(m[i], len, torch::kFloat32, "exp_avg");
    check_flat(v[i], len, torch::kFloat32, "exp_avg_sq");
    if (!params[i].is_cuda())
      throw Error("adamw", "adamw_step_on_device: shard " + std::to_string(i) + " is not on a CUDA device");
    if (!bf16_copies.empty()) check_flat(bf16_copies[i], len, torch::kBFloat16, "bf16_copy");
  }
#if DT_FUSED_DEVICE_ADAMW
  torch::NoGradGuard no_grad;
  step_count.add_(1 - skip);  // the fused kernel reads the new count for the bias corrections
  const std::vector<torch::Tensor> steps(n, step_count);
  at::_fused_adamw_(params, grads, m, v, {}, steps, c.lr, c.beta1, c.beta2, c.weight_decay, c.eps, /*amsgrad=*/false,
                    /*maximize=*/false, grad_divisor, skip);
#else
  throw Error("adamw",
              std::string("the device update needs LibTorch >= 2.1 (its fused AdamW); this is ") + TORCH_VERSION);
#endif
  for (size_t i = 0; i < bf16_copies.size(); ++i) bf16_copies[i].copy_(params[i]);
}

void ema_update(torch::Tensor ema, const torch::Tensor& param, double decay) {
  const int64_t n = param.numel();
  check_flat(ema, n, torch::kFloat32, "ema");
  check_flat(param, n, torch::kFloat32, "param");
  if (ema.is_cuda()) {
    ema.mul_(decay).add_(param, 1 - decay);
    return;
  }
  float* e = ema.data_ptr<float>();
  const float* p = param.data_ptr<float>();
  const float d = static_cast<float>(decay);
  at::parallel_for(0, n, kGrain, [=](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) e[i] = d * e[i] + (1 - d) * p[i];
  });
}

double global_grad_norm(const std::vector<torch::Tensor>& local_grads, Communicator* comm) {
  // Each square in fp64 and summed in fp64, in one read of the gradients (measured on sdxl-c128:
  // converting them to fp64 tensors first wrote and re-read 7 GB a step).
  double local = 0;
  for (const auto& g : local_grads) {
    if (!g.is_cpu() || g.scalar_type() != torch::kFloat32 || !g.is_contiguous()) {
      local += g.to(torch::kFloat64).pow(2).sum().item<double>();
      continue;
    }
    const float* gp = g.data_ptr<float>();
    const int64_t n = g.numel();
    constexpr int64_t kBlock = 1 << 14, kLanes = 16;
    // Blocks over the threads, each block's sum kept and the blocks added in order afterwards: the
    // norm does not depend on the thread count. Within a block 16 independent fp64 sums (a single
    // running sum would wait on each add's latency: measured 2x the whole AdamW pass), combined
    // pairwise.
    std::vector<double> block_sums(static_cast<size_t>((n + kBlock - 1) / kBlock));
    double* sums = block_sums.data();
    at::parallel_for(0, static_cast<int64_t>(block_sums.size()), kGrain / kBlock, [=](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
        double lane[kLanes] = {};
        int64_t i = lo;
        for (; i + kLanes <= hi; i += kLanes)
          for (int64_t j = 0; j < kLanes; ++j) lane[j] += static_cast<double>(gp[i + j]) * gp[i + j];
        for (; i < hi; ++i) lane[0] += static_cast<double>(gp[i]) * gp[i];
        for (int64_t w = kLanes / 2; w > 0; w /= 2)
          for (int64_t j = 0; j < w; ++j) lane[j] += lane[j + w];
        sums[b] = lane[0];
      }
    });
    double part = 0;
    for (double s : block_sums) part += s;
    local += part;
  }
  torch::Tensor sq = torch::full({1}, local, torch::kFloat64);
  if (comm) comm->all_reduce(sq, ReduceOp::kSum);
  return std::sqrt(sq.item<double>());
}

torch::Tensor global_grad_norm_on_device(const std::vector<torch::Tensor>& local_grads, Communicator* comm) {
  if (local_grads.empty()) throw Error("adamw", "global_grad_norm_on_device: no gradients");
  // Each shard's norm by the device's tree reduction (fp32 accumulation in a tree is accurate, unlike
  // LibTorch 1.13's CPU loop), the squares summed in fp64.
  std::vector<torch::Tensor> norms;
  for (const auto& g : local_grads) norms.push_back(g.norm());
  torch::Tensor sq32 = torch::stack(norms).to(torch::kFloat64).pow(2).sum().to(torch::kFloat32).reshape({1});
  if (comm) comm->all_reduce(sq32, ReduceOp::kSum);
  return sq32.sqrt();
}

double clip_factor(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace dtrainer::parallel
