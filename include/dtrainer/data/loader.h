#pragma once
// The streaming loader: rank r's part of each global batch (data/global_order.h), read from
// HDF5 shards, with [S1]'s caption choice, [S2]'s flip flag as a control input, the diffusion
// core's text padding, weighted mixing of shard sets, background prefetch into a bounded queue,
// a serialisable state for checkpoints and the time the trainer waited for data.

#include <array>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "dtrainer/data/global_order.h"
#include "dtrainer/diffusion/text_padding.h"

namespace dtrainer::data {

class ShardReader;

struct LoaderConfig {
  std::vector<std::string> dirs;  // one shard directory per dataset
  std::vector<double> weights;    // mixing weights (default: equal)
  int64_t global_batch = 8;
  int64_t rank = 0;
  int64_t world = 1;
  uint64_t seed = 0;
  double p_synthetic_caption = 0.5;  // [S1]: with this probability a synthetic caption is used...
  int64_t synthetic_top_k = 5;       // ...chosen uniformly among the top k (1 = the top-1 variant)
  bool random_flip = true;           // horizontal flips with p = 0.5, flag in controls_high[:, 2]
  diffusion::TextPaddingConfig padding;
  int64_t prefetch = 2;           // batches prepared ahead in the background; 0 = synchronous
  int64_t workers = 1;            // background threads building batches (delivered in order)
  bool skip_bad_samples = false;  // drop (and count) unreadable or non-finite samples instead of failing
  // [S2] crop-scale pre-training (data/crop_scale.h), pixel-space data only: {lo, hi} fractions of the
  // side ({0, 0}: off), each crop resized to crop_size (0: the stored side). The crop's offset adds to
  // the controls' crop top / left.
  std::array<double, 2> crop_scale{0, 0};
  int64_t crop_size = 0;
};

struct Batch {
  int64_t step = 0;                 // global batch index g
  std::vector<int64_t> sample_ids;  // global sample ids (keys for the objective's draws)
  std::vector<int64_t> datasets;    // dataset of each sample
  torch::Tensor latents;            // [b, C, H, W] float32
  torch::Tensor text, text_mask;    // [b, T, D] float32, [b, T] bool (padding policy applied)
  torch::Tensor controls_high;      // [b, 4] crop top, crop left, flip (0/1), aspect ratio (w / h)
  torch::Tensor controls_low;       // [b, 2] original height, width
  torch::Tensor caption_nouns;      // [b] int64: nouns of the chosen captions (image-noun pairs)
  torch::Tensor synthetic_caption;  // [b] bool: a synthetic caption was chosen
  int64_t bytes_read = 0;           // bytes fetched from the shards for this batch
  int64_t skipped = 0;              // samples dropped by skip_bad_samples
};

// Where the loader stands: enough to continue the identical sequence, on any rank count.
struct LoaderState {
  int64_t next_batch = 0;
  uint64_t seed = 0;
  int64_t global_batch = 0;
  std::vector<int64_t> dataset_sizes;
  std::vector<double> weights;
  nlohmann::json to_json() const;
  static LoaderState from_json(const nlohmann::json& j);  // throws Error("loader state") on bad JSON
};

class Loader {
 public:
  // Opens every shard (structure checked, shapes consistent across shards and datasets).
  explicit Loader(LoaderConfig config);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  Batch next();               // this rank's next batch; rethrows loading errors
  LoaderState state() const;  // the state after the last batch next() returned
  // Continue from `state` (saved by a run with any rank count). Throws Error when the data or
  // the seed / global batch differ from the state's.
  void restore(const LoaderState& state);
  double take_data_wait_s();        // seconds next() spent waiting since the last call
  int64_t skipped_samples() const;  // total dropped by skip_bad_samples
  int64_t dataset_size(int64_t d) const;
  // [C, H, W] of the batches' latents (with crop_scale: crop_size; the shards' shape otherwise).
  const std::vector<int64_t>& latent_shape() const { return crop_ ? output_shape_ : latent_shape_; }
  int64_t text_dim() const { return text_dim_; }
  const GlobalOrder& order() const { return *order_; }

  // Builds batch g synchronously (what the prefetch thread runs).
  Batch load_batch(int64_t g) const;

 private:
  struct Dataset;
  void start();
  void stop();
  void produce();

  LoaderConfig config_;
  std::vector<std::unique_ptr<Dataset>> datasets_;
  std::unique_ptr<GlobalOrder> order_;
  std::vector<int64_t> latent_shape_;  // as stored
  std::vector<int64_t> output_shape_;  // as delivered (crops)
  bool crop_ = false;
  int64_t text_dim_ = 0;

  int64_t next_batch_ = 0;     // next batch next() returns
  int64_t produce_batch_ = 0;  // next batch the producer builds
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::map<int64_t, Batch> ready_;  // built batches by index, waiting for next()
  std::exception_ptr error_;
  int64_t error_batch_ = -1;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  double data_wait_s_ = 0;
  mutable int64_t skipped_ = 0;
};

}  // namespace dtrainer::data
