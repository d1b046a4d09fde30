#pragma once
// The global sample order: a deterministic function of (seed, batch index) only — never of the
// number of ranks — so a 1-rank and an N-rank run consume identical global batches, and a run
// resumed at batch g (on any rank count) continues exactly.
//
// Global batch g of size G holds n_d samples of dataset d, n_d the largest-remainder
// apportionment of G by the mixing weights (the same every batch). Dataset d's k-th sample
// overall (k = g n_d + j) is permutation_{d, epoch}(k mod N_d) with epoch = k div N_d: each
// epoch of each dataset is a fresh seeded shuffle. The G slots are then shuffled by a permutation
// keyed by (seed, g), and rank r of W takes slots [r G/W, (r+1) G/W).

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace dtrainer::data {

struct SampleRef {
  int64_t dataset = 0;  // which shard set
  int64_t index = 0;    // image index within the dataset (its shards concatenated)
  int64_t id = 0;       // global sample id = g * G + slot: keys every per-sample random draw
  int64_t epoch = 0;    // the dataset epoch this sample belongs to
};

class GlobalOrder {
 public:
  // Throws Error naming the field on empty datasets, non-positive weights, or a weight too small
  // to get one slot of a global batch.
  GlobalOrder(std::vector<int64_t> dataset_sizes, std::vector<double> weights, int64_t global_batch, uint64_t seed);

  int64_t global_batch() const { return G_; }
  const std::vector<int64_t>& slots_per_dataset() const { return slots_; }
  const std::vector<int64_t>& dataset_sizes() const { return sizes_; }
  std::vector<SampleRef> batch(int64_t g) const;
  // Rank `rank`'s part of batch g; world must divide the global batch.
  std::vector<SampleRef> rank_slice(int64_t g, int64_t rank, int64_t world) const;

 private:
  std::shared_ptr<const std::vector<int64_t>> permutation(int64_t dataset, int64_t epoch) const;
  std::vector<int64_t> sizes_, slots_;
  std::vector<double> weights_;
  int64_t G_;
  uint64_t seed_;
  mutable std::mutex mutex_;
  mutable std::map<std::pair<int64_t, int64_t>, std::shared_ptr<const std::vector<int64_t>>> cache_;
};

// Largest-remainder apportionment of `total` by `weights` (ties to the lower index).
std::vector<int64_t> apportion(int64_t total, const std::vector<double>& weights);

}  // namespace dtrainer::data
