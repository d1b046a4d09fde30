// dtdata as a user runs it: synth -> validate, exit codes, JSON reports.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data_test_util.h"
#include "run_process.h"
#include "dtrainer/data/shard_writer.h"

using namespace dtrainer;

namespace {
std::pair<int, std::string> run(const std::string& args) {
  const auto r = test::run_process(std::string(DTDATA_PATH) + " " + args);
  return {r.status, r.out};
}
}  // namespace

TEST_CASE("dtdata synth then validate passes; stats report image-noun pairs") {
  const std::string dir = test::scratch_dir("cli-shapes");
  auto [rc, out] = run("synth --kind shapes --out " + dir + " --images 20 --seed 3");
  REQUIRE(rc == 0);
  std::tie(rc, out) = run("validate " + dir);
  CHECK(rc == 0);
  CHECK_THAT(out, Catch::Contains("OK: 1 shard(s), 20 images, 120 captions"));
  std::tie(rc, out) = run("stats " + dir + " --json");
  REQUIRE(rc == 0);
  const auto j = nlohmann::json::parse(out);
  CHECK(j["images"] == 20);
  CHECK(j["image_noun_pairs_original"].get<int64_t>() > 20);
  CHECK(j["image_noun_pairs_all_captions"].get<int64_t>() > j["image_noun_pairs_original"].get<int64_t>());
}

TEST_CASE(
    "dtdata validate: exit 1 with the bad image named; --skip-bad-samples accepts and counts; exit 2 on missing "
    "input") {
  const std::string dir = test::scratch_dir("cli-bad");
  data::ShardContents c = test::random_shard(5, 9);
  c.latents[2][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  data::write_shard(dir + "/s.h5", c);
  auto [rc, out] = run("validate " + dir);
  CHECK(rc == 1);
  CHECK_THAT(out, Catch::Contains("s.h5: image 2: latent has NaN or Inf values") && Catch::Contains("INVALID"));
  std::tie(rc, out) = run("validate " + dir + " --skip-bad-samples --json");
  CHECK(rc == 0);
  CHECK(nlohmann::json::parse(out)["skipped_samples"] == 1);
  std::tie(rc, out) = run("validate " + dir + "/nope");
  CHECK(rc == 2);
  CHECK_THAT(out, Catch::Contains("nope: no such directory"));
  std::tie(rc, out) = run("synth --kind pictures --out " + dir + "/x");
  CHECK(rc == 2);
}

TEST_CASE("dtdata bench reports the keys the acceptance reads") {
  const std::string dir = test::scratch_dir("cli-bench");
  REQUIRE(run("synth --kind latents --out " + dir + " --images 64 --latent-size 8 --text-dim 64").first == 0);
  const auto [rc, out] = run("bench " + dir + " --json --seconds 0.2 --batch 16");
  REQUIRE(rc == 0);
  const auto j = nlohmann::json::parse(out);
  for (const char* k : {"samples_per_s", "loader_mb_per_s", "raw_read_mb_per_s"}) {
    INFO(k);
    CHECK(j.contains(k));
    CHECK(j[k].get<double>() > 0);
  }
}
