// [S2]'s crop-scale pre-training (data/crop_scale.h) and the loader's crops: the drawn scales follow
// the configured range (a statistical test), each crop is keyed per sample (the same on 1 and 2
// ranks), its pixels are the stored image's box resized, and its offsets enter the controls.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "data_test_util.h"
#include "dtrainer/core/error.h"
#include "dtrainer/data/crop_scale.h"
#include "dtrainer/data/loader.h"
#include "dtrainer/data/shard_reader.h"

using namespace dtrainer;
using namespace dtrainer::data;

namespace {
// A pixel-space shard of `n` RGB images of side S (smooth gradients plus noise: resizing matters).
std::string pixel_dir(const std::string& name, const std::string& space = "pixels") {
  const std::string dir = test::scratch_dir(name);
  data::ShardContents c = test::random_shard(24, 3, 3, 32, 16, 12, 0);
  c.header.latent_space = space;
  write_shard(dir + "/s0.h5", c);
  return dir;
}

LoaderConfig crop_config(const std::string& dir, int64_t rank, int64_t world) {
  LoaderConfig c;
  c.dirs = {dir};
  c.global_batch = 8;
  c.rank = rank;
  c.world = world;
  c.seed = 5;
  c.random_flip = false;
  c.padding.max_tokens = 12;
  c.prefetch = 0;
  c.crop_scale = {0.4, 0.6};
  c.crop_size = 16;
  return c;
}
}  // namespace

TEST_CASE("crop scales are uniform over the configured range and the boxes stay inside") {
  for (const auto& [lo, hi] : {std::pair<double, double>{0.4, 0.6}, {0.9, 1.0}, {0.4, 1.0}}) {
    const int64_t n = 20000, H = 64, W = 48;
    std::vector<double> scales;
    std::set<int64_t> tops;
    for (int64_t i = 0; i < n; ++i) {
      const CropBox b = draw_crop(11, i / 64, i, H, W, lo, hi);
      REQUIRE(b.scale >= lo);
      REQUIRE(b.scale <= hi);
      REQUIRE(b.side == std::clamp<int64_t>(std::llround(b.scale * W), 1, W));
      REQUIRE(b.top >= 0);
      REQUIRE(b.left >= 0);
      REQUIRE(b.top + b.side <= H);
      REQUIRE(b.left + b.side <= W);
      scales.push_back((b.scale - lo) / (hi - lo));  // uniform on [0, 1] if the draw is right
      tops.insert(b.top);
    }
    // Kolmogorov-Smirnov against U(0, 1): D < 1.63 / sqrt(n) at the 1% level.
    std::sort(scales.begin(), scales.end());
    double d = 0;
    for (int64_t i = 0; i < n; ++i)
      d = std::max({d, std::abs(scales[i] - static_cast<double>(i) / n), std::abs(scales[i] - (i + 1.0) / n)});
    INFO("lo " << lo << " hi " << hi << " KS D " << d);
    CHECK(d < 1.63 / std::sqrt(static_cast<double>(n)));
    // Every offset that keeps the smallest box inside occurs.
    CHECK(static_cast<int64_t>(tops.size()) == H - std::llround(lo * W) + 1);
  }
  // Keyed: the same sample of the same batch gets the same box; another batch another.
  const CropBox a = draw_crop(3, 7, 42, 32, 32, 0.4, 0.6), b = draw_crop(3, 7, 42, 32, 32, 0.4, 0.6);
  CHECK((a.top == b.top && a.left == b.left && a.side == b.side));
  int same = 0;
  for (int64_t g = 0; g < 50; ++g) {
    const CropBox c = draw_crop(3, g, 42, 32, 32, 0.4, 0.6);
    same += c.top == a.top && c.left == a.left && c.side == a.side;
  }
  CHECK(same < 5);
  for (const auto& [lo, hi] : {std::pair<double, double>{0, 0.5}, {0.6, 0.4}, {0.5, 1.2}})
    CHECK_THROWS_AS(draw_crop(0, 0, 0, 8, 8, lo, hi), Error);
}

TEST_CASE("the loader's crops: the stored box resized, the same on 1 and 2 ranks, offsets in the controls") {
  const std::string dir = pixel_dir("crops");
  const ShardReader shard(dir + "/s0.h5");
  Loader one(crop_config(dir, 0, 1));
  CHECK(one.latent_shape() == std::vector<int64_t>{3, 16, 16});
  Loader r0(crop_config(dir, 0, 2)), r1(crop_config(dir, 1, 2));
  for (int step = 0; step < 3; ++step) {
    const Batch b = one.next();
    const Batch p0 = r0.next(), p1 = r1.next();
    CHECK(torch::equal(b.latents, torch::cat({p0.latents, p1.latents})));
    CHECK(torch::equal(b.controls_high, torch::cat({p0.controls_high, p1.controls_high})));
    const auto refs = one.order().rank_slice(b.step, 0, 1);
    for (size_t j = 0; j < refs.size(); ++j) {
      const int64_t local = refs[j].index;
      const CropBox box = draw_crop(5, b.step, refs[j].id, 32, 32, 0.4, 0.6);
      // The pixels: the box (from the drawn offsets, not the loader's) of the stored image, resized
      // bilinearly, antialiased when shrinking.
      const torch::Tensor stored = shard.read_latent(local).to(torch::kFloat32);
      const torch::Tensor expect = torch::nn::functional::interpolate(
          stored.narrow(1, box.top, box.side).narrow(2, box.left, box.side).unsqueeze(0),
          torch::nn::functional::InterpolateFuncOptions()
              .size(std::vector<int64_t>{16, 16})
              .mode(torch::kBilinear)
              .align_corners(false)
              .antialias(box.side > 16));
      CHECK(torch::allclose(b.latents[j], expect.squeeze(0), 1e-5, 1e-5));
      // The controls: the shard's crop plus this crop's offset; the original size as stored.
      CHECK(b.controls_high[j][0].item<float>() == shard.crop(local)[0] + box.top);
      CHECK(b.controls_high[j][1].item<float>() == shard.crop(local)[1] + box.left);
      CHECK(b.controls_low[j][0].item<float>() == shard.original_size(local)[0]);
    }
  }
  // Latent data is cropped when encoded, not here: an error naming crop_scale.
  const std::string latents = pixel_dir("crops-latent", "sdxl-vae");
  try {
    Loader bad(crop_config(latents, 0, 1));
    FAIL("a latent-space crop was accepted");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("crop_scale") && Catch::Contains("encoded"));
  }
}
