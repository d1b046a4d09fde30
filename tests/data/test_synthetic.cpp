// The synthetic compositional dataset and the toy text encoder.
#include <catch2/catch.hpp>

#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data_test_util.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"
#include "dtrainer/data/shapes_scene.h"
#include "dtrainer/data/shard_reader.h"
#include "dtrainer/data/synthesize.h"
#include "dtrainer/data/toy_text_encoder.h"
#include "dtrainer/data/validate.h"

using namespace dtrainer;
using namespace dtrainer::data;

TEST_CASE("toy text encoder: CLIP-like tokens, deterministic, words keep their identity across positions") {
  const ToyTextEncoder enc(64, 10);
  CHECK(enc.tokenize("A red Circle, left.") ==
        std::vector<std::string>{"<start>", "a", "red", "circle", ",", "left", ".", "<end>"});
  CHECK(enc.tokenize(std::string(200, 'x') + " y").size() == 4);  // <start>, the long word, y, <end>
  CHECK(enc.tokenize("one two three four five six seven eight nine ten").size() == 10);  // cut to T, ends with <end>
  CHECK(enc.tokenize("one two three four five six seven eight nine ten").back() == "<end>");
  const torch::Tensor a = enc.encode("red circle"), b = enc.encode("red circle");
  CHECK(a.sizes() == torch::IntArrayRef({4, 64}));
  CHECK(torch::equal(a, b));
  CHECK(enc.encode("").size(0) == 2);  // the null text
  // "red" at position 1 and at position 2 differ only by the position signal.
  const torch::Tensor c = enc.encode("big red");
  const torch::Tensor pos_diff = c[2] - a[1];
  CHECK(pos_diff.abs().max().item<float>() <= 1.0f + 1e-5f);  // two sin-cos signals of amplitude 0.5
  CHECK_FALSE(torch::allclose(enc.encode("blue circle")[1], a[1]));
}

TEST_CASE("noun counts follow the toy vocabulary") {
  CHECK(ToyTextEncoder::count_nouns("red circle and blue square") == 2);
  CHECK(ToyTextEncoder::count_nouns("two shapes: a red circle at the top left") == 2);
  CHECK(ToyTextEncoder::count_nouns("an image with three shapes") == 2);
  CHECK(ToyTextEncoder::count_nouns("left of the") == 0);
}

TEST_CASE("rendered scenes show each shape in its colour at its cell; captions and ground truth agree") {
  ShapesScene scene;
  scene.objects = {{0, 0, 0}, {2, 1, 3}};  // red circle top left, blue square bottom right
  const torch::Tensor img = render_scene(scene, 32);
  CHECK(img.sizes() == torch::IntArrayRef({3, 32, 32}));
  CHECK(torch::equal(img.index({torch::indexing::Slice(), 8, 8}), torch::tensor({1.0f, -1.0f, -1.0f})));  // red centre
  CHECK(
      torch::equal(img.index({torch::indexing::Slice(), 24, 24}), torch::tensor({-1.0f, -1.0f, 1.0f})));  // blue centre
  CHECK(
      torch::equal(img.index({torch::indexing::Slice(), 8, 24}), torch::tensor({-1.0f, -1.0f, -1.0f})));  // empty cell
  CHECK(img.min().item<float>() >= -1.0f);
  CHECK(img.max().item<float>() <= 1.0f);
  const auto caps = scene_captions(scene);
  REQUIRE(caps.size() == 6);
  CHECK(caps[0] == "red circle and blue square");
  CHECK(caps[1] ==
        "two shapes: a red circle at the top left and a blue square at the bottom right. the red circle is left of the "
        "blue square");
  CHECK(caps[5] == "an image with two shapes");
  for (size_t k = 2; k < caps.size(); ++k) CHECK(caps[k].size() < caps[1].size());  // rank 1 is the densest
  const auto gt = scene_ground_truth(scene);
  CHECK(gt["count"] == 2);
  CHECK(gt["objects"][1]["position"] == "bottom right");
  CHECK(gt["relations"][0]["relation"] == "left of");
}

TEST_CASE("dtdata synth shapes: valid shards, eval prompts, deterministic in the seed") {
  SynthConfig c;
  c.out_dir = test::scratch_dir("synth");
  c.images = 40;
  c.images_per_shard = 16;
  c.text_dim = 32;
  c.eval_prompts = 10;
  const SynthReport r = synthesize(c);
  CHECK(r.shards.size() == 3);
  CHECK(r.images == 40);
  CHECK(r.captions == 240);
  const ValidationReport v = validate_directory(c.out_dir);
  CHECK(v.ok());
  const ShardReader s(r.shards[0]);
  CHECK(s.header().latent_space == "pixels");
  CHECK(s.latent_shape() == std::vector<int64_t>{3, 32, 32});
  CHECK(s.caption_count(0) == 6);
  const auto texts = s.caption_texts();
  CHECK(s.caption_nouns(0) == ToyTextEncoder::count_nouns(texts[0]));
  CHECK(torch::equal(s.read_tokens(0).to(torch::kFloat32),
                     ToyTextEncoder(32, 77, 0x746f79).encode(texts[0]).to(torch::kFloat16).to(torch::kFloat32)));
  std::ifstream f(r.eval_prompts);
  const auto prompts = nlohmann::json::parse(f);
  CHECK(prompts["prompts"].size() == 10);
  CHECK(prompts["prompts"][0].contains("objects"));
  CHECK(s.header().text_encoder == "dtrainer-toy-text-v2");
  // Another seed (a held-out set) has other images but encodes the same words alike: one frozen encoder.
  SynthConfig other = c;
  other.out_dir = test::scratch_dir("synth-other-seed");
  other.seed = 1000003;
  const ShardReader o(synthesize(other).shards[0]);
  const auto other_texts = o.caption_texts();
  CHECK_FALSE(torch::equal(o.read_latent(0), s.read_latent(0)));
  CHECK(torch::equal(o.read_tokens(0).to(torch::kFloat32),
                     ToyTextEncoder(32, 77).encode(other_texts[0]).to(torch::kFloat16).to(torch::kFloat32)));
  CHECK_THROWS_WITH(synthesize(c), Catch::Contains("already contains shards"));
  c.force = true;
  const SynthReport again = synthesize(c);
  CHECK(torch::equal(ShardReader(again.shards[1]).read_all().latents, ShardReader(r.shards[1]).read_all().latents));
}
