#include "dtrainer/data/global_order.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"

namespace dtrainer::data {

std::vector<int64_t> apportion(int64_t total, const std::vector<double>& weights) {
  const double sum = std::accumulate(weights.begin(), weights.end(), 0.0);
  std::vector<int64_t> out(weights.size());
  std::vector<std::pair<double, size_t>> rem;
  int64_t given = 0;
  for (size_t d = 0; d < weights.size(); ++d) {
    const double exact = total * weights[d] / sum;
    out[d] = static_cast<int64_t>(std::floor(exact));
    given += out[d];
    rem.push_back({exact - out[d], d});
  }
  std::stable_sort(rem.begin(), rem.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t k = 0; given < total; ++k, ++given) ++out[rem[k].second];
  return out;
}

GlobalOrder::GlobalOrder(std::vector<int64_t> sizes, std::vector<double> weights, int64_t G, uint64_t seed)
    : sizes_(std::move(sizes)), weights_(std::move(weights)), G_(G), seed_(seed) {
  if (sizes_.empty()) throw Error("data", "no dataset");
  if (weights_.empty()) weights_.assign(sizes_.size(), 1.0);
  if (weights_.size() != sizes_.size())
    throw Error("data.weights",
                std::to_string(weights_.size()) + " weights for " + std::to_string(sizes_.size()) + " datasets");
  if (G_ < 1) throw Error("global_batch", "must be at least 1");
  for (size_t d = 0; d < sizes_.size(); ++d) {
    if (sizes_[d] < 1) throw Error("data", "dataset " + std::to_string(d) + " is empty");
    if (!(weights_[d] > 0)) throw Error("data.weights", "weight " + std::to_string(d) + " must be positive");
  }
  slots_ = apportion(G_, weights_);
  for (size_t d = 0; d < slots_.size(); ++d)
    if (slots_[d] == 0)
      throw Error("data.weights", "dataset " + std::to_string(d) +
                                      "'s weight is too small for a single sample of a global batch of " +
                                      std::to_string(G_));
}

std::shared_ptr<const std::vector<int64_t>> GlobalOrder::permutation(int64_t d, int64_t epoch) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = cache_.find({d, epoch});
  if (it != cache_.end()) return it->second;
  auto perm = std::make_shared<std::vector<int64_t>>(sizes_[d]);
  std::iota(perm->begin(), perm->end(), 0);
  StreamRng rng(stream_key(seed_, RngPurpose::kDataOrder, static_cast<uint64_t>(epoch), static_cast<uint64_t>(d)));
  for (int64_t i = sizes_[d] - 1; i > 0; --i)  // Fisher-Yates
    std::swap((*perm)[i], (*perm)[static_cast<int64_t>(rng.uniform() * (i + 1))]);
  // Keep the few epochs in use (a batch can straddle two); drop older ones.
  for (auto e = cache_.begin(); e != cache_.end();)
    e = (e->first.first == d && e->first.second < epoch - 1) ? cache_.erase(e) : std::next(e);
  cache_[{d, epoch}] = perm;
  return perm;
}

std::vector<SampleRef> GlobalOrder::batch(int64_t g) const {
  if (g < 0) throw Error("data", "negative batch index");
  std::vector<SampleRef> refs;
  refs.reserve(G_);
  for (size_t d = 0; d < slots_.size(); ++d)
    for (int64_t j = 0; j < slots_[d]; ++j) {
      const int64_t k = g * slots_[d] + j, epoch = k / sizes_[d];
      refs.push_back({static_cast<int64_t>(d), (*permutation(d, epoch))[k % sizes_[d]], 0, epoch});
    }
  if (slots_.size() > 1) {  // interleave the datasets within the batch
    StreamRng rng(stream_key(seed_, RngPurpose::kDatasetMix, static_cast<uint64_t>(g), 0));
    for (int64_t i = G_ - 1; i > 0; --i) std::swap(refs[i], refs[static_cast<int64_t>(rng.uniform() * (i + 1))]);
  }
  for (int64_t s = 0; s < G_; ++s) refs[s].id = g * G_ + s;
  return refs;
}

std::vector<SampleRef> GlobalOrder::rank_slice(int64_t g, int64_t rank, int64_t world) const {
  if (world < 1 || G_ % world != 0)
    throw Error("global_batch", std::to_string(G_) + " is not divisible by the " + std::to_string(world) + " ranks");
  if (rank < 0 || rank >= world)
    throw Error("rank", std::to_string(rank) + " outside [0, " + std::to_string(world) + ")");
  const std::vector<SampleRef> all = batch(g);
  const int64_t b = G_ / world;
  return std::vector<SampleRef>(all.begin() + rank * b, all.begin() + (rank + 1) * b);
}

}  // namespace dtrainer::data
