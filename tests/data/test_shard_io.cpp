// Shard format v1: bit-exact round trips, shards from an independent (h5py) writer, and every
// bad-input case named in the data issue.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data_test_util.h"
#include "dtrainer/core/error.h"
#include "dtrainer/data/loader.h"
#include "dtrainer/data/shard_reader.h"
#include "dtrainer/data/validate.h"

using namespace dtrainer;
using namespace dtrainer::data;
namespace fs = std::filesystem;

TEST_CASE("shards read back bit-exactly in every element type and layout") {
  const ShardContents c = test::random_shard(7, 1);
  const std::string dir = test::scratch_dir("roundtrip");
  struct Case {
    ElementType lat, tok;
    int64_t chunk;
    int gzip;
  };
  for (const Case& k : {Case{ElementType::kFloat32, ElementType::kFloat32, 0, 0},
                        Case{ElementType::kFloat16, ElementType::kFloat16, 0, 0},
                        Case{ElementType::kBFloat16, ElementType::kBFloat16, 0, 0},
                        Case{ElementType::kFloat32, ElementType::kFloat16, 3, 4}}) {
    INFO(to_string(k.lat) << "/" << to_string(k.tok) << " chunk " << k.chunk << " gzip " << k.gzip);
    const std::string path = dir + "/s.h5";
    write_shard(path, c, {k.lat, k.tok, k.chunk, k.gzip});
    CHECK_FALSE(fs::exists(path + ".tmp"));
    const ShardReader r(path);
    const ShardContents back = r.read_all();
    CHECK(r.latent_dtype() == k.lat);
    CHECK(r.token_dtype() == k.tok);
    CHECK(torch::equal(back.latents, c.latents.to(torch_dtype(k.lat))));  // bit-exact in the stored type
    CHECK(torch::equal(back.tokens, c.tokens.to(torch_dtype(k.tok))));
    CHECK(back.caption_offsets == c.caption_offsets);
    CHECK(back.token_offsets == c.token_offsets);
    CHECK(back.caption_nouns == c.caption_nouns);
    CHECK(back.captions == c.captions);
    CHECK(back.original_size == c.original_size);
    CHECK(back.crop == c.crop);
    CHECK(back.source == c.source);
    CHECK(back.source_names == c.source_names);
    CHECK(torch::equal(r.read_tokens(c.token_offsets.size() - 2),
                       c.tokens
                           .narrow(0, c.token_offsets[c.token_offsets.size() - 2],
                                   c.token_offsets.back() - c.token_offsets[c.token_offsets.size() - 2])
                           .to(torch_dtype(k.tok))));
  }
}

TEST_CASE("a shard written by an independent h5py writer following data/README.md loads correctly") {
  const std::string dir = test::scratch_dir("independent");
  REQUIRE(test::run_command(std::string(DT_NUMPY_PYTHON) + " " + DT_H5PY_WRITER + " " + dir + " valid") == 0);
  std::ifstream f(dir + "/expected.json");
  const auto expected = nlohmann::json::parse(f);
  fs::remove(dir + "/expected.json");
  CHECK(validate_directory(dir).ok());
  for (const std::string name : {"shard-a.h5", "shard-b.h5"}) {
    INFO(name);
    const auto& e = expected.at(name);
    const ShardReader r(dir + "/" + name);
    REQUIRE(r.num_images() == e["images"].get<int64_t>());
    const auto lat = e["latents"].get<std::vector<double>>();
    CHECK(torch::equal(r.read_all().latents.to(torch::kFloat64).flatten(), torch::tensor(lat, torch::kFloat64)));
    const auto texts = r.caption_texts();
    for (int64_t i = 0; i < r.num_images(); ++i) {
      REQUIRE(r.caption_count(i) == e["captions_per_image"][i].get<int64_t>());
      for (int64_t k = 0; k < r.caption_count(i); ++k) {
        const int64_t j = r.first_caption(i) + k;
        const auto tok = e["tokens"][i][k].get<std::vector<double>>();
        CHECK(torch::equal(r.read_tokens(j).to(torch::kFloat64).flatten(), torch::tensor(tok, torch::kFloat64)));
        CHECK(r.caption_nouns(j) == e["nouns"][i][k].get<int64_t>());
        if (!e["texts"].empty()) CHECK(texts[j] == e["texts"][i][k].get<std::string>());
      }
      CHECK(r.original_size(i) == std::array<int64_t, 2>{256, 384});
      CHECK(r.crop(i) == std::array<int64_t, 2>{3, 5});
    }
  }
  LoaderConfig lc;
  lc.dirs = {dir};
  lc.global_batch = 3;
  lc.padding.max_tokens = 77;
  Loader loader(lc);
  const Batch b = loader.next();
  CHECK(b.latents.sizes() == torch::IntArrayRef({3, 4, 8, 8}));
  CHECK(b.text.sizes() == torch::IntArrayRef({3, 77, 16}));
}

TEST_CASE("bad input: truncated, corrupt, wrong version, empty, missing -> errors naming the file") {
  const std::string dir = test::scratch_dir("bad");
  const std::string good = dir + "/good.h5";
  write_shard(good, test::random_shard(6, 2));
  const auto size = fs::file_size(good);

  const std::string truncated = dir + "/truncated.h5";
  fs::copy_file(good, truncated);
  fs::resize_file(truncated, size / 2);
  CHECK_THROWS_WITH(ShardReader(truncated), Catch::StartsWith(truncated));
  CHECK_FALSE(validate_shard(truncated).ok());

  const std::string corrupt = dir + "/corrupt.h5";
  fs::copy_file(good, corrupt);
  {
    std::fstream f(corrupt, std::ios::in | std::ios::out | std::ios::binary);
    const std::string junk(64, 'x');
    f.write(junk.data(), junk.size());  // clobber the HDF5 superblock
  }
  CHECK_THROWS_WITH(ShardReader(corrupt), Catch::StartsWith(corrupt) && Catch::Contains("cannot open as HDF5"));

  ShardContents v2 = test::random_shard(2, 3);
  v2.header.schema_version = 2;
  const std::string wrong_version = dir + "/v2.h5";
  write_shard(wrong_version, v2);
  CHECK_THROWS_WITH(ShardReader(wrong_version),
                    Catch::StartsWith(wrong_version) && Catch::Contains("schema version 2"));

  const std::string empty_dir = test::scratch_dir("bad-empty");
  REQUIRE(test::run_command(std::string(DT_NUMPY_PYTHON) + " " + DT_H5PY_WRITER + " " + empty_dir + " empty") == 0);
  CHECK_THROWS_WITH(ShardReader(empty_dir + "/empty.h5"), Catch::Contains("empty.h5: shard contains no images"));
  CHECK_THROWS_WITH(write_shard(dir + "/none.h5", ShardContents{}), Catch::Contains("at least one image"));
  CHECK_FALSE(fs::exists(dir + "/none.h5"));

  CHECK_THROWS_WITH(list_shards(dir + "/nowhere"), Catch::Contains("nowhere: no such directory"));
  CHECK_THROWS_WITH(list_shards(test::scratch_dir("no-shards")), Catch::Contains("contains no shard files"));
  CHECK_THROWS_WITH(write_shard(dir + "/missing-subdir/x.h5", test::random_shard(1, 4)),
                    Catch::Contains("cannot create"));
}

TEST_CASE("bad input: NaN/Inf latents are found with their image; skip_bad_samples drops and counts them") {
  const std::string dir = test::scratch_dir("nan");
  ShardContents c = test::random_shard(8, 5);
  c.latents[3][0][1][2] = std::numeric_limits<float>::quiet_NaN();
  c.latents[6][1][0][0] = std::numeric_limits<float>::infinity();
  write_shard(dir + "/s.h5", c);
  const ValidationReport r = validate_directory(dir);
  REQUIRE(r.problems.size() == 2);
  CHECK(r.problems[0].image == 3);
  CHECK(r.problems[1].image == 6);
  CHECK_THAT(r.problems[0].message(), Catch::Contains("s.h5: image 3: latent has NaN or Inf"));

  LoaderConfig lc;
  lc.dirs = {dir};
  lc.global_batch = 8;  // one batch = the whole shard, so both bad images are in it
  lc.padding.max_tokens = 12;
  lc.prefetch = 0;
  {
    Loader strict(lc);
    CHECK_THROWS_WITH(strict.next(), Catch::Contains("s.h5: image") && Catch::Contains("NaN or Inf"));
  }
  lc.skip_bad_samples = true;
  Loader lenient(lc);
  const Batch b = lenient.next();
  CHECK(b.skipped == 2);
  CHECK(b.latents.size(0) == 6);
  CHECK(lenient.skipped_samples() == 2);
  CHECK(torch::isfinite(b.latents).all().item<bool>());
}

TEST_CASE("bad input: shards with mismatched shapes are rejected naming the file") {
  const std::string dir = test::scratch_dir("mismatch");
  write_shard(dir + "/a.h5", test::random_shard(3, 6, 4, 8));
  write_shard(dir + "/b.h5", test::random_shard(3, 7, 4, 16));
  const ValidationReport r = validate_directory(dir);
  REQUIRE(r.problems.size() == 1);
  CHECK_THAT(r.problems[0].message(),
             Catch::Contains("b.h5") && Catch::Contains("latents are [4, 16, 16] but") && Catch::Contains("a.h5"));
  LoaderConfig lc;
  lc.dirs = {dir};
  lc.padding.max_tokens = 12;
  CHECK_THROWS_WITH(Loader(lc), Catch::Contains("b.h5") && Catch::Contains("must match"));
}
