#include "dtrainer/models/token_mask.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <torch/torch.h>

#include "dtrainer/core/rng.h"

namespace dtrainer::models {

double token_mask_ratio(uint64_t seed, int64_t step, double mask_ratio) {
  StreamRng rng(stream_key(seed, RngPurpose::kTokenMask, static_cast<uint64_t>(step), ~uint64_t{0}));
  return mask_ratio + 0.2 * rng.uniform();
}

torch::Tensor kept_tokens(uint64_t seed, int64_t step, const std::vector<int64_t>& sample_ids, int64_t tokens,
                          double mask_ratio) {
  const double ratio = token_mask_ratio(seed, step, mask_ratio);
  const int64_t keep = std::max<int64_t>(1, static_cast<int64_t>(std::floor(tokens * (1.0 - ratio))));
  torch::Tensor out = torch::empty({static_cast<int64_t>(sample_ids.size()), keep}, torch::kInt64);
  auto acc = out.accessor<int64_t, 2>();
  std::vector<double> u(tokens);
  std::vector<int64_t> order(tokens);
  for (size_t i = 0; i < sample_ids.size(); ++i) {
    StreamRng rng(
        stream_key(seed, RngPurpose::kTokenMask, static_cast<uint64_t>(step), static_cast<uint64_t>(sample_ids[i])));
    for (auto& x : u) x = rng.uniform();
    std::iota(order.begin(), order.end(), 0);
    // The `keep` tokens of smallest draw (MDT's argsort of uniform noise), in token order.
    std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                      [&](int64_t a, int64_t b) { return u[a] < u[b] || (u[a] == u[b] && a < b); });
    std::sort(order.begin(), order.begin() + keep);
    for (int64_t j = 0; j < keep; ++j) acc[i][j] = order[j];
  }
  return out;
}

}  // namespace dtrainer::models
