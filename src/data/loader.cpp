#include "dtrainer/data/loader.h"

#include <chrono>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"
#include "dtrainer/data/crop_scale.h"
#include "dtrainer/data/shard_reader.h"
#include "dtrainer/data/validate.h"

namespace dtrainer::data {

// One shard set: its shards and the first image index of each (images of all shards concatenated).
struct Loader::Dataset {
  std::string dir;
  std::vector<ShardReader> shards;
  std::vector<int64_t> first;  // prefix sums, size shards + 1
  int64_t size() const { return first.back(); }
  std::pair<const ShardReader*, int64_t> locate(int64_t index) const {
    const auto it = std::upper_bound(first.begin(), first.end(), index);
    const size_t s = static_cast<size_t>(it - first.begin()) - 1;
    return {&shards[s], index - first[s]};
  }
};

nlohmann::json LoaderState::to_json() const {
  return {{"version", 1},
          {"next_batch", next_batch},
          {"seed", seed},
          {"global_batch", global_batch},
          {"dataset_sizes", dataset_sizes},
          {"weights", weights}};
}

LoaderState LoaderState::from_json(const nlohmann::json& j) {
  try {
    if (j.at("version").get<int>() != 1) throw Error("loader state", "unknown version");
    LoaderState s;
    s.next_batch = j.at("next_batch").get<int64_t>();
    s.seed = j.at("seed").get<uint64_t>();
    s.global_batch = j.at("global_batch").get<int64_t>();
    s.dataset_sizes = j.at("dataset_sizes").get<std::vector<int64_t>>();
    s.weights = j.at("weights").get<std::vector<double>>();
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw Error("loader state", std::string("malformed: ") + e.what());
  }
}

Loader::Loader(LoaderConfig config) : config_(std::move(config)) {
  if (config_.dirs.empty()) throw Error("data.dirs", "no shard directory given");
  if (!(config_.p_synthetic_caption >= 0 && config_.p_synthetic_caption <= 1))
    throw Error("data.p_synthetic_caption", "must be a probability");
  if (config_.synthetic_top_k < 1) throw Error("data.synthetic_top_k", "must be at least 1");
  if (config_.prefetch < 0) throw Error("data.prefetch", "must be >= 0");
  if (config_.workers < 1) throw Error("data.workers", "must be at least 1");
  std::string ref_file;
  std::vector<int64_t> sizes;
  for (const auto& dir : config_.dirs) {
    auto ds = std::make_unique<Dataset>();
    ds->dir = dir;
    ds->first = {0};
    for (const auto& f : list_shards(dir)) {
      ds->shards.emplace_back(f);
      const ShardReader& s = ds->shards.back();
      if (ref_file.empty()) {
        ref_file = f;
        latent_shape_ = s.latent_shape();
        text_dim_ = s.header().text_dim;
      } else if (s.latent_shape() != latent_shape_ || s.header().text_dim != text_dim_) {
        throw Error(f, "latent shape / text_dim differ from " + ref_file + "'s: all shards of a run must match");
      }
      if (s.header().max_tokens > config_.padding.max_tokens)
        throw Error(f, "has captions of up to " + std::to_string(s.header().max_tokens) +
                           " tokens but text is padded to " + std::to_string(config_.padding.max_tokens));
      ds->first.push_back(ds->first.back() + s.num_images());
    }
    sizes.push_back(ds->size());
    datasets_.push_back(std::move(ds));
  }
  crop_ = config_.crop_scale[1] > 0;
  if (crop_) {
    draw_crop(0, 0, 0, 1, 1, config_.crop_scale[0], config_.crop_scale[1]);  // (validates the range)
    if (datasets_.front()->shards.front().header().latent_space != "pixels")
      throw Error("crop_scale", config_.dirs.front() + " holds " +
                                    datasets_.front()->shards.front().header().latent_space +
                                    " latents: crops are taken on the fly from pixel-space data only; latent data "
                                    "is cropped when it is encoded (docs/TRAINING.md \"Stages\")");
    const int64_t out = config_.crop_size > 0 ? config_.crop_size : latent_shape_[1];
    output_shape_ = {latent_shape_[0], out, out};
  }
  order_ = std::make_unique<GlobalOrder>(sizes, config_.weights, config_.global_batch, config_.seed);
  order_->rank_slice(0, config_.rank, config_.world);  // validates rank / world / divisibility
  start();
}

Loader::~Loader() { stop(); }

int64_t Loader::dataset_size(int64_t d) const { return datasets_.at(d)->size(); }

Batch Loader::load_batch(int64_t g) const {
  const std::vector<SampleRef> refs = order_->rank_slice(g, config_.rank, config_.world);
  const int64_t C = latent_shape_[0], H = latent_shape_[1], W = latent_shape_[2], b = static_cast<int64_t>(refs.size());
  Batch out;
  out.step = g;
  // Raw values go straight into one batch buffer in the first shard's dtype; the batch is then
  // converted, checked and flipped with a handful of whole-batch operations.
  const ShardReader* shard0 = datasets_[refs[0].dataset]->locate(refs[0].index).first;
  torch::Tensor raw = torch::empty({b, C, H, W}, torch_dtype(shard0->latent_dtype()));
  std::vector<torch::Tensor> prompts(b);
  std::vector<float> high(4 * b), low(2 * b);
  std::vector<int64_t> nouns(b), flipped;
  std::vector<uint8_t> synthetic(b);
  std::vector<std::pair<const ShardReader*, int64_t>> where(b);
  std::vector<bool> unreadable(b, false);
  for (int64_t i = 0; i < b; ++i) {
    const SampleRef& r = refs[i];
    const auto [shard, local] = datasets_[r.dataset]->locate(r.index);
    where[i] = {shard, local};
    out.sample_ids.push_back(r.id);
    out.datasets.push_back(r.dataset);
    // Caption: the original, or with probability p one of the top-k synthetic captions.
    StreamRng pick(stream_key(config_.seed, RngPurpose::kCaptionChoice, g, r.id));
    const int64_t count = shard->caption_count(local);
    int64_t k = 0;
    if (count > 1 && pick.uniform() < config_.p_synthetic_caption) {
      const int64_t top = std::min(config_.synthetic_top_k, count - 1);
      k = 1 + std::min(top - 1, static_cast<int64_t>(pick.uniform() * top));
    }
    const int64_t caption = shard->first_caption(local) + k;
    try {
      if (shard->latent_dtype() == shard0->latent_dtype())
        shard->read_latent_into(local, raw[i].data_ptr());
      else
        raw[i].copy_(shard->read_latent(local));
      prompts[i] = shard->read_tokens(caption);
      if (!torch::isfinite(prompts[i]).all().item<bool>())
        throw Error(shard->path(), "image " + std::to_string(local) + ": caption " + std::to_string(caption) +
                                       " has NaN or Inf token embeddings");
    } catch (const ShardChangedError&) {
      throw;  // (the data changed under the run: never a bad sample to skip)
    } catch (const Error&) {
      if (!config_.skip_bad_samples) throw;
      unreadable[i] = true;
      raw[i].fill_(0);
      prompts[i] = torch::zeros({1, text_dim_});
    }
    // [S2] flip conditioning: the latent is mirrored and the flag becomes a control input.
    const bool flip =
        config_.random_flip && StreamRng(stream_key(config_.seed, RngPurpose::kFlip, g, r.id)).uniform() < 0.5;
    if (flip) flipped.push_back(i);
    const auto size = shard->original_size(local);
    const auto crop = shard->crop(local);
    high[4 * i + 0] = static_cast<float>(crop[0]);
    high[4 * i + 1] = static_cast<float>(crop[1]);
    high[4 * i + 2] = flip ? 1.0f : 0.0f;
    high[4 * i + 3] = static_cast<float>(size[1]) / static_cast<float>(size[0]);
    low[2 * i + 0] = static_cast<float>(size[0]);
    low[2 * i + 1] = static_cast<float>(size[1]);
    nouns[i] = shard->caption_nouns(caption);
    synthetic[i] = k > 0;
    if (!unreadable[i])
      out.bytes_read += C * H * W * element_bytes(shard->latent_dtype()) +
                        shard->token_length(caption) * text_dim_ * element_bytes(shard->token_dtype());
  }
  torch::Tensor latents = raw.to(torch::kFloat32);
  if (crop_) {  // [S2] crop-scale: each sample's keyed crop, resized; its offset joins the controls
    const int64_t out_side = output_shape_[1];
    torch::Tensor cropped = torch::empty({b, C, out_side, out_side}, torch::kFloat32);
    for (int64_t i = 0; i < b; ++i) {
      const CropBox box = draw_crop(config_.seed, g, refs[i].id, H, W, config_.crop_scale[0], config_.crop_scale[1]);
      cropped[i].copy_(crop_resize(latents[i], box, out_side));
      high[4 * i + 0] += static_cast<float>(box.top);
      high[4 * i + 1] += static_cast<float>(box.left);
    }
    latents = cropped;
  }
  if (!flipped.empty()) {
    const torch::Tensor idx = torch::tensor(flipped, torch::kInt64);
    latents.index_copy_(0, idx, latents.index_select(0, idx).flip({3}));
  }
  const diffusion::PaddedText padded = diffusion::pad_text(prompts, config_.padding, out.sample_ids, g);
  // One finite check of the latents per batch (tokens were checked as read); a bad sample is named
  // (or dropped with skip_bad_samples).
  const torch::Tensor ok = torch::isfinite(latents).flatten(1).all(1);
  std::vector<int64_t> keep;
  const auto ok_acc = ok.accessor<bool, 1>();
  for (int64_t i = 0; i < b; ++i) {
    if (ok_acc[i] && !unreadable[i]) {
      keep.push_back(i);
      continue;
    }
    if (!config_.skip_bad_samples)
      throw Error(where[i].first->path(),
                  "image " + std::to_string(where[i].second) + ": latent has NaN or Inf values");
    ++out.skipped;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    skipped_ += out.skipped;
  }
  if (keep.empty())
    throw Error("data", "every sample of batch " + std::to_string(g) + " on rank " + std::to_string(config_.rank) +
                            " was skipped");
  out.latents = latents;
  out.text = padded.tokens;
  out.text_mask = padded.mask;
  out.controls_high = torch::from_blob(high.data(), {b, 4}, torch::kFloat32).clone();
  out.controls_low = torch::from_blob(low.data(), {b, 2}, torch::kFloat32).clone();
  out.caption_nouns = torch::tensor(nouns, torch::kInt64);
  out.synthetic_caption = torch::tensor(std::vector<int64_t>(synthetic.begin(), synthetic.end())).to(torch::kBool);
  if (static_cast<int64_t>(keep.size()) < b) {  // drop the skipped samples everywhere
    const torch::Tensor idx = torch::tensor(keep, torch::kInt64);
    for (torch::Tensor* t : {&out.latents, &out.text, &out.text_mask, &out.controls_high, &out.controls_low,
                             &out.caption_nouns, &out.synthetic_caption})
      *t = t->index_select(0, idx);
    std::vector<int64_t> ids, ds;
    for (int64_t i : keep) {
      ids.push_back(out.sample_ids[i]);
      ds.push_back(out.datasets[i]);
    }
    out.sample_ids = ids;
    out.datasets = ds;
  }
  return out;
}

void Loader::start() {
  stopping_ = false;
  error_ = nullptr;
  error_batch_ = -1;
  ready_.clear();
  produce_batch_ = next_batch_;
  if (config_.prefetch > 0)
    for (int64_t w = 0; w < config_.workers; ++w) workers_.emplace_back([this] { produce(); });
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
}

void Loader::produce() {
  torch::NoGradGuard no_grad;
  while (true) {
    int64_t g;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // At most `prefetch` batches ahead of the consumer (built or being built).
      cv_.wait(lock, [&] { return stopping_ || error_ || produce_batch_ - next_batch_ < config_.prefetch; });
      if (stopping_ || error_) return;
      g = produce_batch_++;
    }
    try {
      Batch b = load_batch(g);
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(g, std::move(b));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_ || g < error_batch_) {
        error_ = std::current_exception();
        error_batch_ = g;
      }
    }
    cv_.notify_all();
  }
}

Batch Loader::next() {
  const auto t0 = std::chrono::steady_clock::now();
  Batch b;
  if (config_.prefetch == 0) {
    b = load_batch(next_batch_);
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    // Batches arrive in order; an error surfaces when the batch it belongs to is due.
    cv_.wait(lock, [&] { return ready_.count(next_batch_) || (error_ && error_batch_ == next_batch_); });
    auto it = ready_.find(next_batch_);
    if (it == ready_.end()) std::rethrow_exception(error_);
    b = std::move(it->second);
    ready_.erase(it);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++next_batch_;
  }
  cv_.notify_all();
  data_wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return b;
}

LoaderState Loader::state() const {
  LoaderState s;
  s.next_batch = next_batch_;
  s.seed = config_.seed;
  s.global_batch = config_.global_batch;
  s.dataset_sizes = order_->dataset_sizes();
  s.weights = config_.weights.empty() ? std::vector<double>(datasets_.size(), 1.0) : config_.weights;
  return s;
}

void Loader::restore(const LoaderState& s) {
  const LoaderState mine = state();
  auto list = [](const auto& v) {
    std::string out;
    for (const auto& x : v) out += (out.empty() ? "" : ", ") + nlohmann::json(x).dump();
    return "[" + out + "]";
  };
  if (s.seed != mine.seed)
    throw Error("loader state", "the checkpoint was saved with seed " + std::to_string(s.seed) + ", this run has " +
                                    std::to_string(mine.seed));
  if (s.global_batch != mine.global_batch)
    throw Error("loader state", "the checkpoint was saved with global batch " + std::to_string(s.global_batch) +
                                    ", this run has " + std::to_string(mine.global_batch));
  if (s.dataset_sizes != mine.dataset_sizes)
    throw Error("loader state", "the checkpoint was saved with datasets of " + list(s.dataset_sizes) +
                                    " images, this run's data has " + list(mine.dataset_sizes) +
                                    " (changed data: resume with the data the run started with)");
  if (s.weights != mine.weights)
    throw Error("loader state", "the checkpoint was saved with mixing weights " + list(s.weights) + ", this run has " +
                                    list(mine.weights));
  stop();
  next_batch_ = s.next_batch;
  start();
}

double Loader::take_data_wait_s() {
  const double w = data_wait_s_;
  data_wait_s_ = 0;
  return w;
}

int64_t Loader::skipped_samples() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return skipped_;
}

}  // namespace dtrainer::data
