// TensorBoard event files read back by an independent reader (read_tfevents.py: protobuf's own
// decoder and a bitwise CRC-32C), from the writer and from a training run: every numeric value of
// every metrics.jsonl record is a scalar at its step.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "dtrainer/train/metrics_log.h"
#include "dtrainer/train/tensorboard_events.h"
#include "run_process.h"
#include "train/dtrainer_runner.h"

using namespace dtrainer;
namespace fs = std::filesystem;

namespace {

std::vector<nlohmann::json> read_events(const std::string& dir) {
  std::string files;
  for (const auto& e : fs::directory_iterator(dir)) files += " " + e.path().string();
  const auto r = test::run_process(std::string(DT_PYTHON) + " " + READER + files);
  INFO(r.out);
  REQUIRE(r.status == 0);
  std::vector<nlohmann::json> events;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) events.push_back(nlohmann::json::parse(line));
  return events;
}

}  // namespace

TEST_CASE("CRC-32C and TFRecord framing match their published definitions") {
  const std::string check = "123456789";
  CHECK(train::crc32c(check.data(), check.size()) == 0xE3069283u);  // the CRC-32C check value (RFC 3720)
  CHECK(train::crc32c("", 0) == 0u);
  const std::string r = train::tfrecord("abc");
  REQUIRE(r.size() == 8 + 4 + 3 + 4);
  CHECK(r.substr(0, 8) == std::string("\x03\0\0\0\0\0\0\0", 8));
  CHECK(r.substr(12, 3) == "abc");
}

TEST_CASE("TensorBoard events: the file version first, then each step's scalars, as protobuf decodes them") {
  const std::string dir = test::scratch_dir("tb-writer");
  {
    train::TensorBoardWriter w(dir);
    w.add_scalars(1, {{"loss", 0.5f}, {"lr", 1e-3f}});
    w.add_scalars(300000000000LL, {{"a/b", -2.25f}});  // a step past 32 bits
    w.add_scalars(7, {});                              // nothing to write
  }
  const auto events = read_events(dir);
  REQUIRE(events.size() == 3);
  CHECK(events[0]["file_version"] == "brain.Event:2");
  CHECK(events[0]["wall_time"].get<double>() > 1.7e9);
  CHECK(events[1]["step"] == 1);
  CHECK(events[1]["values"]["loss"] == 0.5);
  CHECK(events[1]["values"]["lr"].get<double>() == Approx(1e-3).epsilon(1e-6));
  CHECK(events[2]["step"] == 300000000000LL);
  CHECK(events[2]["values"] == nlohmann::json{{"a/b", -2.25}});
}

TEST_CASE("the scalars of a record: nested objects flattened, intervals as lo/hi, text and flags left out") {
  const nlohmann::json record = {{"step", 4},
                                 {"eval", true},
                                 {"eval_loss", 0.25},
                                 {"by_t", {{"0.1", 1.0}, {"0.9", 2.0}}},
                                 {"alignment_interval", {0.4, 0.6}},
                                 {"dir", "x/y"},
                                 {"shape", {3, 16, 16}}};
  std::map<std::string, float> got;
  for (const auto& [k, v] : train::MetricsLog::scalars(record)) got[k] = v;
  CHECK(got == std::map<std::string, float>{{"eval_loss", 0.25f},
                                            {"by_t/0.1", 1.0f},
                                            {"by_t/0.9", 2.0f},
                                            {"alignment_interval/lo", 0.4f},
                                            {"alignment_interval/hi", 0.6f}});
}

TEST_CASE("a training run's TensorBoard events hold every scalar of metrics.jsonl at its step") {
  const std::string dir = test::scratch_dir("tb-run");
  REQUIRE(test::run(1, "--steps 4 --eval-every 2 --align-every 2 --run-dir " + dir, dir + ".log") == 0);
  std::map<int64_t, std::map<std::string, float>> want, got;
  std::ifstream in(dir + "/metrics.jsonl");
  size_t records = 0;
  for (std::string line; std::getline(in, line); ++records) {
    const auto j = nlohmann::json::parse(line);
    for (const auto& [k, v] : train::MetricsLog::scalars(j)) want[j["step"].get<int64_t>()][k] = v;
  }
  REQUIRE(records >= 4 + 2 + 3);  // 4 training, eval at 2 and 4, alignment at 0, 2 and 4
  for (const auto& e : read_events(dir + "/tb"))
    for (const auto& [k, v] : e["values"].items()) got[e["step"].get<int64_t>()][k] = v.get<float>();
  CHECK(got == want);
  CHECK(got.at(4).count("loss") == 1);
  CHECK(got.at(4).count("eval_loss") == 1);
  CHECK(got.at(0).count("alignment_by_category/presence") == 1);
}
