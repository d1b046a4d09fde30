// The trainer's configuration: TOML keys and command-line options are one set, the command line
// wins, unknown keys and bad values are errors naming them, and the resolved config.toml reads
// back to the same configuration. Also the learning-rate schedule's closed forms.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include <CLI/CLI.hpp>

#include "data/data_test_util.h"
#include "dtrainer/core/error.h"
#include "dtrainer/train/lr_schedule.h"
#include "dtrainer/train/job_file.h"
#include "dtrainer/train/train_config.h"

using namespace dtrainer;
using namespace dtrainer::train;

namespace {
std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = test::scratch_dir("config") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

void parse(TrainConfig& c, std::vector<std::string> args) {
  CLI::App app;
  add_train_options(app, c);
  args.insert(args.begin(), "dtrainer");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  parse_train_config(app, static_cast<int>(argv.size()), argv.data());
}
}  // namespace

TEST_CASE("TOML keys set fields and the command line overrides them") {
  const std::string f = write_file(
      "a.toml",
      "global_batch = 64\nlr = 8e-5\nmodel_set = [\"model_channels=64\"]\nsharding = \"zero2\"\nrandom_flip = false\n");
  TrainConfig c;
  parse(c, {"--config", f, "--lr", "1e-4"});
  CHECK(c.global_batch == 64);
  CHECK(c.lr == Approx(1e-4));
  CHECK(std::string(name_of(c.sharding)) == "zero2");
  CHECK_FALSE(c.random_flip);
  CHECK(c.model_set == std::vector<std::string>{"model_channels=64"});
}

TEST_CASE("an unknown key in the file is an error naming the key and the file") {
  const std::string f = write_file("b.toml", "global_batch = 64\nglobal_bach = 3\n");
  TrainConfig c;
  try {
    parse(c, {"--config", f});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("global_bach") && Catch::Contains(f));
  }
}

TEST_CASE("bad values are errors naming the option") {
  TrainConfig c;
  CHECK_THROWS_WITH(parse(c, {"--sharding", "zero4"}), Catch::Contains("sharding"));
  CHECK_THROWS_WITH(parse(c, {"--global-batch", "0"}), Catch::Contains("global-batch"));
  CHECK_THROWS_AS(parse(c, {"--no-such-option", "1"}), CLI::ParseError);
  const std::string f = write_file("c.toml", "p_drop_text = 1.5\n");
  CHECK_THROWS_WITH(parse(c, {"--config", f}), Catch::Contains("p-drop-text"));
}

TEST_CASE("cross-field validation names the field") {
  TrainConfig c;
  c.global_batch = 6;
  CHECK_THROWS_WITH(validate_train_config(c, 4), Catch::Contains("global_batch"));
  c.global_batch = 8;
  c.micro_batch = 3;
  CHECK_THROWS_WITH(validate_train_config(c, 2), Catch::Contains("micro_batch"));
  c.micro_batch = 2;
  CHECK_NOTHROW(validate_train_config(c, 2));
  c.zero_terminal_snr = true;
  CHECK_THROWS_WITH(validate_train_config(c, 2), Catch::Contains("zero_terminal_snr"));
}

TEST_CASE("the resolved config.toml reads back to the same configuration") {
  TrainConfig a;
  CLI::App app;
  add_train_options(app, a);
  const char* argv[] = {"dtrainer",
                        "--lr",
                        "3e-4",
                        "--model-set",
                        "model_channels=48",
                        "channel_mult=1,2",
                        "--sharding",
                        "zero3",
                        "--steps",
                        "77",
                        "--data",
                        "x",
                        "y",
                        "--data-weights",
                        "0.25",
                        "0.75"};
  parse_train_config(app, 16, argv);
  const std::string toml = train_config_toml(a);
  const std::string f = write_file("resolved.toml", toml);
  TrainConfig b;
  parse(b, {"--config", f});
  CHECK(b.lr == Approx(3e-4));
  CHECK(b.model_set == a.model_set);
  CHECK(std::string(name_of(b.sharding)) == "zero3");
  CHECK(b.steps == 77);
  CHECK(b.data == std::vector<std::string>{"x", "y"});
  CHECK(b.data_weights == a.data_weights);
  CHECK(b.ema_decay == Approx(a.ema_decay));
  CHECK(b.random_flip == a.random_flip);
}

// Every choice accepts each name of its enum's table (the one list: a name added to the table is an
// option value at once), records it in config.toml and reads it back; a wrong name is refused
// naming the option and listing the accepted names.
template <typename E>
void check_choice(const std::string& key, E TrainConfig::*field) {
  for (const auto& [name, value] : name_table(E{}).entries()) {
    INFO(key << " = " << name);
    TrainConfig c;
    parse(c, {"--" + key, name});
    CHECK((c.*field) == value);
    TrainConfig back = train_config_from_toml(train_config_toml(c), "recorded");
    CHECK((back.*field) == value);
    CHECK_THAT(train_config_toml(c), Catch::Contains(key + " = \"" + std::string(name) + "\""));
  }
  TrainConfig c;
  try {
    parse(c, {"--" + key, "no_such_choice"});
    FAIL("accepted a wrong name");
  } catch (const CLI::ParseError& e) {
    CHECK_THAT(e.what(), Catch::Contains("no_such_choice") && Catch::Contains(name_table(E{}).joined(", ")));
  }
}

TEST_CASE("choices: every name of each enum's table is accepted, recorded and read back; others refused") {
  check_choice("sharding", &TrainConfig::sharding);
  check_choice("compute_dtype", &TrainConfig::compute_dtype);
  check_choice("device", &TrainConfig::device);
  check_choice("text_padding", &TrainConfig::text_padding);
  check_choice("lr_schedule", &TrainConfig::lr_schedule);
  check_choice("target", &TrainConfig::target);
  check_choice("loss_weighting", &TrainConfig::loss_weighting);  // (truncated_snr was missing from the CLI's list)
  check_choice("timestep_sampling", &TrainConfig::timestep_sampling);
  check_choice("beta_schedule", &TrainConfig::beta_schedule);
}

TEST_CASE("learning rate: linear warm-up, then constant or cosine") {
  LrSchedule s{2e-4, 10, 110, false, 0.0};
  CHECK(s.at(1) == Approx(2e-5));
  CHECK(s.at(10) == Approx(2e-4));
  CHECK(s.at(50) == Approx(2e-4));
  s.cosine = true;
  s.min_ratio = 0.1;
  CHECK(s.at(10) == Approx(2e-4));
  CHECK(s.at(60) == Approx(2e-4 * (0.1 + 0.9 * 0.5)));  // half way: cos(pi/2) = 0
  CHECK(s.at(110) == Approx(2e-5));
}

TEST_CASE("job files are parsed as TOML: values exactly, malformed files an error at file:line:column") {
  // (the values the options receive; toml++ is the parser, these are the project's flattening rules)
  const auto items = parse_job_toml(
      "# a job\nsteps = 12\nlr = 1e-4\nname = \"a \\\"b\\\"\"\ndata = [\"x\", \"y\"]\nflip = false\n", "job.toml");
  REQUIRE(items.size() == 5);
  CHECK(items[0].key == "steps");
  CHECK(items[0].values == std::vector<std::string>{"12"});
  CHECK(items[0].line == 2);
  CHECK(std::stod(items[1].values.at(0)) == 1e-4);  // 17 significant digits: the same double
  CHECK(items[2].values == std::vector<std::string>{"a \"b\""});
  CHECK(items[3].values == std::vector<std::string>{"x", "y"});
  CHECK(items[4].values == std::vector<std::string>{"false"});
  struct Bad {
    std::string text, where, what;
  };
  for (const Bad& b : {Bad{"steps = [1,\n", "job.toml:1:", "not valid TOML"},
                       Bad{"a = 1\nname = \"open\n", "job.toml:2:", "not valid TOML"},
                       Bad{"a = 1\na = 2\n", "job.toml:2:", "not valid TOML"},
                       Bad{"x = 99999999999999999999\n", "job.toml:1:", "not valid TOML"},
                       Bad{"[model]\nc = 3\n", "job.toml:1:", "sections are not supported"},
                       Bad{"a = [[1, 2]]\n", "job.toml:1:", "nested array"},
                       Bad{"when = 1979-05-27\n", "job.toml:1:", "date or time"}}) {
    INFO(b.text);
    try {
      parse_job_toml(b.text, "job.toml");
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK_THAT(e.where(), Catch::StartsWith(b.where));
      CHECK_THAT(e.detail(), Catch::Contains(b.what));
    }
  }
}

TEST_CASE("option values: each bad kind gets its own message, integers never clamp, a repeated option takes the last") {
  struct Bad {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Bad& b :
       {Bad{{"--steps", "0"}, "--steps: must be at least 1, got 0"},
        Bad{{"--steps", "-3"}, "--steps: must be at least 1, got -3"},
        Bad{{"--steps", "ten"}, "--steps: expected an integer, got 'ten'"},
        Bad{{"--steps", "9223372036854775808"}, "out of range"}, Bad{{"--lr", "inf"}, "--lr: must be a finite number"},
        Bad{{"--lr", "-1e-3"}, "--lr: must be greater than 0, got -1e-3"},
        Bad{{"--beta2", "1"}, "--beta2: must be in [0, 0.999999], got 1"},
        Bad{{"--data-weights", "1", "--data-weights", "nan"}, "--data-weights: must be a finite number"},
        Bad{{"--synthetic-image-size", "1024"}, "--synthetic-image-size: must be at most 512, got 1024"}}) {
    TrainConfig c;
    INFO(b.args[0] << " " << b.args[1]);
    CHECK_THROWS_WITH(parse(c, b.args), Catch::Contains(b.message));
  }
  TrainConfig c;
  parse(c, {"--steps", "5", "--steps", "7"});
  CHECK(c.steps == 7);
  TrainConfig big;
  parse(big, {"--steps", "9223372036854775807"});
  CHECK(big.steps == 9223372036854775807);
  CHECK_THROWS_WITH(validate_train_config(big, 1), Catch::Contains("overflow"));
}

TEST_CASE("a job file's value of the wrong TOML type is an error at its line; integers stand for floats") {
  TrainConfig ok;
  parse(ok, {"--config", write_file("types-ok.toml", "lr = 1\npeak_tflops = 2\nsteps = 10\n")});
  CHECK(ok.lr == 1.0);
  CHECK(ok.peak_tflops == 2.0);
  struct Bad {
    std::string text, message;
  };
  for (const Bad& b :
       {Bad{"steps = \"10\"\n", "key 'steps' wants an integer, got a string (write the number without quotes)"},
        Bad{"steps = 10.5\n", "key 'steps' wants an integer, got a number"},
        Bad{"random_flip = 1\n", "key 'random_flip' wants a boolean, got an integer"},
        Bad{"name = 7\n", "key 'name' wants a string, got an integer"},
        Bad{"model_set = \"model_channels=8\"\n", "key 'model_set' wants a list, got a string"}}) {
    TrainConfig c;
    const std::string f = write_file("types-bad.toml", "global_batch = 8\n" + b.text);
    INFO(b.text);
    CHECK_THROWS_WITH(parse(c, {"--config", f}), Catch::Contains(f + ":2:") && Catch::Contains(b.message));
  }
}
