// The loader: identical global batches on any rank count, exact resume (1 -> 2 and 2 -> 1 ranks),
// caption choice, flips, mixing, prefetch, state.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "data_test_util.h"
#include "dtrainer/core/error.h"
#include "dtrainer/data/loader.h"
#include "dtrainer/data/shard_reader.h"

using namespace dtrainer;
using namespace dtrainer::data;

namespace {
struct Fixture {
  std::string dir_a, dir_b;
  Fixture() {
    dir_a = test::scratch_dir("loader-a");
    dir_b = test::scratch_dir("loader-b");
    write_shard(dir_a + "/s0.h5", test::random_shard(9, 10, 4, 8, 16, 12, 0));
    write_shard(dir_a + "/s1.h5", test::random_shard(6, 11, 4, 8, 16, 12, 9));
    write_shard(dir_b + "/s0.h5", test::random_shard(5, 12, 4, 8, 16, 12, 100));
  }
};
const Fixture& fixture() {
  static const Fixture f;
  return f;
}

LoaderConfig config(int64_t rank, int64_t world, int64_t prefetch = 0) {
  LoaderConfig c;
  c.dirs = {fixture().dir_a, fixture().dir_b};
  c.weights = {3.0, 1.0};
  c.global_batch = 8;
  c.rank = rank;
  c.world = world;
  c.seed = 17;
  c.padding.policy = diffusion::TextPadding::kNoisyReplicate;
  c.padding.max_tokens = 12;
  c.prefetch = prefetch;
  return c;
}

// Batches g0..g0+n-1 of a `world`-rank run, each rank's slices concatenated.
std::vector<Batch> global_batches(int64_t world, int64_t n, const LoaderState* resume = nullptr) {
  std::vector<std::unique_ptr<Loader>> ranks;
  for (int64_t r = 0; r < world; ++r) {
    ranks.push_back(std::make_unique<Loader>(config(r, world)));
    if (resume) ranks.back()->restore(*resume);
  }
  std::vector<Batch> out;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<Batch> parts;
    for (auto& l : ranks) parts.push_back(l->next());
    Batch b = parts[0];
    for (size_t r = 1; r < parts.size(); ++r) {
      b.latents = torch::cat({b.latents, parts[r].latents});
      b.text = torch::cat({b.text, parts[r].text});
      b.controls_high = torch::cat({b.controls_high, parts[r].controls_high});
      b.caption_nouns = torch::cat({b.caption_nouns, parts[r].caption_nouns});
      b.sample_ids.insert(b.sample_ids.end(), parts[r].sample_ids.begin(), parts[r].sample_ids.end());
    }
    out.push_back(b);
  }
  return out;
}

void check_same(const Batch& a, const Batch& b) {
  CHECK(a.step == b.step);
  CHECK(a.sample_ids == b.sample_ids);
  CHECK(torch::equal(a.latents, b.latents));
  CHECK(torch::equal(a.text, b.text));  // caption choice and padding noise included
  CHECK(torch::equal(a.controls_high, b.controls_high));
  CHECK(torch::equal(a.caption_nouns, b.caption_nouns));
}
}  // namespace

TEST_CASE("1-, 2- and 4-rank runs consume identical global batches") {
  const auto one = global_batches(1, 5), two = global_batches(2, 5), four = global_batches(4, 5);
  for (int i = 0; i < 5; ++i) {
    INFO("batch " << i);
    check_same(one[i], two[i]);
    check_same(one[i], four[i]);
  }
}

TEST_CASE("a resumed run continues the identical sequence, 1 -> 2 and 2 -> 1 ranks") {
  const auto reference = global_batches(1, 7);
  Loader first(config(0, 1, 2));  // with prefetch: batches beyond the state are built but not consumed
  for (int i = 0; i < 4; ++i) first.next();
  const LoaderState saved = LoaderState::from_json(first.state().to_json());
  CHECK(saved.next_batch == 4);
  const auto two = global_batches(2, 3, &saved);
  for (int i = 0; i < 3; ++i) check_same(two[i], reference[4 + i]);

  std::vector<std::unique_ptr<Loader>> ranks;
  for (int r = 0; r < 2; ++r) ranks.push_back(std::make_unique<Loader>(config(r, 2)));
  for (int i = 0; i < 5; ++i)
    for (auto& l : ranks) l->next();
  CHECK(ranks[0]->state().to_json() == ranks[1]->state().to_json());
  const LoaderState from_two = ranks[0]->state();
  const auto resumed = global_batches(1, 2, &from_two);
  check_same(resumed[0], reference[5]);
  check_same(resumed[1], reference[6]);
}

TEST_CASE("restoring a state from different data, seed or batch is refused") {
  Loader l(config(0, 1));
  LoaderState s = l.state();
  // (the checkpoint's value first, this run's second)
  s.seed = 1;
  CHECK_THROWS_WITH(l.restore(s), Catch::Contains("saved with seed 1, this run has " + std::to_string(l.state().seed)));
  s = l.state();
  s.global_batch = 16;
  CHECK_THROWS_WITH(l.restore(s), Catch::Contains("saved with global batch 16, this run has " +
                                                  std::to_string(l.state().global_batch)));
  s = l.state();
  s.dataset_sizes = {1, 2};
  CHECK_THROWS_WITH(l.restore(s), Catch::Contains("saved with datasets of [1, 2] images, this run's data has [" +
                                                  std::to_string(l.dataset_size(0)) + ", " +
                                                  std::to_string(l.dataset_size(1)) + "]"));
  CHECK_THROWS_WITH(LoaderState::from_json(nlohmann::json{{"version", 1}}), Catch::Contains("loader state: malformed"));
}

TEST_CASE("prefetching workers deliver exactly the synchronous sequence") {
  LoaderConfig c = config(0, 1, 3);
  c.workers = 2;
  Loader threaded(c);
  Loader sync(config(0, 1, 0));
  for (int i = 0; i < 6; ++i) check_same(threaded.next(), sync.next());
  CHECK(threaded.take_data_wait_s() >= 0.0);
  CHECK(threaded.take_data_wait_s() == 0.0);  // taken
}

TEST_CASE("caption choice: p = 0.5 of synthetic captions among the top k; top-1 variant; p = 0 originals") {
  const std::string dir = test::scratch_dir("captions");
  // Every image: original with 1 noun, synthetic k with k + 1 nouns (k = 1..5).
  ShardHeader h;
  h.text_dim = 4;
  h.max_tokens = 8;
  ShardBuilder b(h);
  for (int i = 0; i < 200; ++i) {
    std::vector<CaptionRecord> caps;
    for (int k = 0; k < 6; ++k) caps.push_back({"c", torch::full({1 + k, 4}, float(k)), k + 1});
    b.add_image(torch::randn({1, 2, 2}), caps, 32, 32);
  }
  write_shard(dir + "/s.h5", b.build());
  auto draw = [&](double p, int64_t top_k) {
    LoaderConfig c;
    c.dirs = {dir};
    c.global_batch = 200;
    c.p_synthetic_caption = p;
    c.synthetic_top_k = top_k;
    c.padding.max_tokens = 8;
    c.prefetch = 0;
    Loader l(c);
    std::vector<int64_t> counts(7, 0);
    for (int i = 0; i < 10; ++i) {
      const Batch batch = l.next();
      for (int64_t j = 0; j < batch.caption_nouns.size(0); ++j) {
        const int64_t n = batch.caption_nouns[j].item<int64_t>();
        ++counts[n];
        CHECK(batch.synthetic_caption[j].item<bool>() == (n > 1));
        CHECK(batch.text_mask[j].sum().item<int64_t>() == n);  // zero padding: the caption's own length
      }
    }
    return counts;
  };
  const auto half = draw(0.5, 5);  // 2000 draws
  const double se = std::sqrt(0.25 / 2000);
  CHECK(half[1] / 2000.0 == Approx(0.5).margin(5 * se));
  for (int k = 2; k <= 6; ++k) CHECK(half[k] / 2000.0 == Approx(0.1).margin(5 * std::sqrt(0.09 / 2000)));
  const auto top1 = draw(0.5, 1);
  CHECK(top1[2] + top1[1] == 2000);
  CHECK(top1[2] / 2000.0 == Approx(0.5).margin(5 * se));
  CHECK(draw(0.0, 5)[1] == 2000);
}

TEST_CASE("flips mirror the latent and raise the flag; controls carry the metadata") {
  LoaderConfig c = config(0, 1);
  c.dirs = {fixture().dir_a};
  c.weights = {};
  c.global_batch = 15;
  Loader l(c);
  const ShardReader s0(fixture().dir_a + "/s0.h5"), s1(fixture().dir_a + "/s1.h5");
  int flips = 0;
  for (int i = 0; i < 4; ++i) {
    const Batch b = l.next();
    const auto refs = l.order().rank_slice(b.step, 0, 1);
    for (size_t j = 0; j < refs.size(); ++j) {
      const ShardReader& s = refs[j].index < 9 ? s0 : s1;
      const int64_t local = refs[j].index < 9 ? refs[j].index : refs[j].index - 9;
      const bool flipped = b.controls_high[j][2].item<float>() == 1.0f;
      flips += flipped;
      const torch::Tensor stored = s.read_latent(local);
      CHECK(torch::equal(b.latents[j], flipped ? stored.flip({2}) : stored));
      CHECK(b.controls_low[j][0].item<float>() == s.original_size(local)[0]);
      CHECK(b.controls_high[j][0].item<float>() == s.crop(local)[0]);
      CHECK(b.controls_high[j][3].item<float>() == Approx(96.0 / s.original_size(local)[0]));
    }
  }
  CHECK(flips > 15);  // 60 draws at p = 0.5: 30 +- 4
  CHECK(flips < 45);
}
