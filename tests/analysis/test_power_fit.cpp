// Pareto frontiers and power laws.
#include <catch2/catch.hpp>

#include "kokkos_session.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "dtrainer/analysis/power_fit.h"
#include "dtrainer/analysis/table.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"
#include "run_process.h"

using namespace dtrainer;
using namespace dtrainer::analysis;

namespace {
const bool kokkos_ready = (test::ensure_kokkos_session(), true);

// Scratch files of this process, removed at exit.
struct Scratch {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("dtrainer-fitlaws-" + std::to_string(getpid()));
  Scratch() { std::filesystem::create_directories(dir); }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};
std::string scratch(const std::string& name) {
  static Scratch s;
  return (s.dir / name).string();
}
}  // namespace

TEST_CASE("Pareto frontiers keep the best score reached so far (max) or the lowest loss (min)") {
  const std::vector<double> x = {1, 2, 2, 3, 4, 5}, y = {0.5, 0.4, 0.6, 0.55, 0.7, 0.7};
  CHECK(pareto_frontier(x, y, Frontier::kMax) == std::vector<size_t>{0, 2, 4});
  CHECK(pareto_frontier(x, y, Frontier::kMin) == std::vector<size_t>{0, 1});
  CHECK(pareto_frontier(x, y, Frontier::kNone).size() == 6);
}

TEST_CASE("an exact power law is recovered exactly; noisy ones within their bootstrap intervals") {
  std::vector<double> x, y;
  for (double v : {1e2, 1e3, 1e4, 1e5}) x.push_back(v), y.push_back(0.47 * std::pow(v, 0.02));
  const PowerFit f = fit_power(x, y);
  CHECK(f.a == Approx(0.47).epsilon(1e-10));
  CHECK(f.b == Approx(0.02).margin(1e-12));
  CHECK(f.r2 == Approx(1.0));
  // [S1]-like compute law with 1% noise on 40 points.
  StreamRng rng(5);
  x.clear(), y.clear();
  for (int i = 0; i < 40; ++i) {
    const double c = std::pow(10.0, 2 + 4.0 * i / 39);
    x.push_back(c);
    y.push_back(0.47 * std::pow(c, 0.02) * std::exp(0.01 * rng.normal()));
  }
  const PowerFit g = fit_power(x, y);
  const PowerBootstrap b = bootstrap_power(x, y, g, 400, 9);
  INFO("b = " << g.b << " [" << b.b.lo << ", " << b.b.hi << "]");
  CHECK(b.b.lo <= 0.02);
  CHECK(0.02 <= b.b.hi);
  CHECK(b.a.lo <= 0.47);
  CHECK(0.47 <= b.a.hi);
  // Saturating form recovers an offset law y = 1.5 + 2 x^-0.3.
  std::vector<double> sx, sy;
  for (double v = 1; v < 1e4; v *= 2) sx.push_back(v), sy.push_back(1.5 + 2 * std::pow(v, -0.3));
  const SaturatingFit s = fit_saturating(sx, sy);
  CHECK(s.c == Approx(1.5).epsilon(1e-4));
  CHECK(s.a == Approx(2.0).epsilon(1e-4));
  CHECK(s.b == Approx(-0.3).epsilon(1e-4));
}

TEST_CASE("bad tables: missing column, non-numeric or non-positive cells, too few points") {
  const std::string path = scratch("bad.csv");
  std::ofstream(path) << "compute,score,name\n1e3,0.5,a\n1e4,abc,b\n\"1e5\",0.6,\"c, d\"\n";
  const Table t = read_csv(path);
  CHECK(t.rows[2][2] == "c, d");
  CHECK_THROWS_WITH(t.numeric("tifa"), Catch::Contains("no column 'tifa'") && Catch::Contains("compute, score, name"));
  CHECK_THROWS_WITH(t.numeric("score"), Catch::Contains("row 2, column score") && Catch::Contains("'abc'"));
  CHECK(t.numeric("compute") == std::vector<double>{1e3, 1e4, 1e5});
  CHECK_THROWS_WITH(fit_power({1, 2, 3}, {1, 0, 2}), Catch::Contains("point 2, y"));
  CHECK_THROWS_WITH(fit_power({1, 2}, {1, 2}), Catch::Contains("at least 3 points"));
  std::ofstream(scratch("ragged.csv")) << "a,b\n1,2\n3\n";
  CHECK_THROWS_WITH(read_csv(scratch("ragged.csv")), Catch::Contains("row 2") && Catch::Contains("1 fields"));
  CHECK_THROWS_WITH(read_csv(scratch("missing.csv")), Catch::Contains("cannot open"));
}

TEST_CASE("fitlaws CLI: power and chinchilla JSON keys, SVG plot, run directories, errors") {
  const std::string csv = scratch("law.csv");
  {
    std::ofstream f(csv);
    f << "C,S\n";
    for (int i = 0; i < 12; ++i)
      f << std::pow(10.0, 1 + i * 0.3) << "," << 0.47 * std::pow(10.0, (1 + i * 0.3) * 0.02) * (i % 3 == 1 ? 0.97 : 1.0)
        << "\n";
  }
  auto r = test::run_process(std::string(FITLAWS_PATH) + " power --data " + csv +
                             " --x C --y S --frontier max --json --bootstrap 50 --plot " + scratch("p.svg"));
  REQUIRE(r.status == 0);
  auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"a", "b", "r2", "ci"}) CHECK(j.contains(k));
  CHECK(j["frontier_points"].get<int>() == 8);  // the 4 points dipped by 3% are dominated
  CHECK(j["b"].get<double>() == Approx(0.02).margin(1e-9));
  std::ifstream svg(scratch("p.svg"));
  const std::string text((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Catch::StartsWith("<svg") && Catch::Contains("Pareto frontier") && Catch::Contains("<polyline"));
  r = test::run_process(std::string(FITLAWS_PATH) + " power --data " + csv + " --x C --y S --plot " + scratch("p.png"));
  REQUIRE(r.status == 0);
  std::ifstream png(scratch("p.png"), std::ios::binary);
  char sig[8] = {};
  png.read(sig, 8);
  CHECK(std::string(sig, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
  r = test::run_process(std::string(FITLAWS_PATH) + " power --data " + csv + " --x C --y S --plot " + scratch("p.pdf"));
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("--plot writes .svg or .png"));

  // Run directories: metrics.jsonl records with the trainer's keys.
  const std::string runs = scratch("runs");
  std::vector<std::string> dirs;
  for (int i = 0; i < 6; ++i) {
    const std::string d = runs + "/run" + std::to_string(i);
    std::filesystem::create_directories(d);
    const double N = 1e8 * (1 + i), D = 1e9 * (6 - i), C = 6 * N * D / 1e9;
    std::ofstream(d + "/metrics.jsonl") << "{\"step\": 1, \"loss\": 9.0, \"params\": " << N
                                        << ", \"compute_gflops\": 1, \"image_noun_pairs\": 1}\n"
                                        << "{\"step\": 2, \"loss\": "
                                        << 2 + 100 / std::pow(N, 0.3) + 300 / std::pow(D, 0.3) << ", \"params\": " << N
                                        << ", \"compute_gflops\": " << C << ", \"image_noun_pairs\": " << D << "}\n";
    dirs.push_back(d);
  }
  std::string args;
  for (const auto& d : dirs) args += " " + d;
  r = test::run_process(std::string(FITLAWS_PATH) + " power --runs" + args + " --x C --y loss --frontier min --json");
  CHECK(r.status == 0);
  CHECK(nlohmann::json::parse(r.out)["points"] == 6);

  r = test::run_process(std::string(FITLAWS_PATH) + " chinchilla --data " + DT_CHINCHILLA_CSV +
                        " --n 'Model Size' --flops 'Training FLOP' --loss loss --drop-worst 5 --json");
  REQUIRE(r.status == 0);
  j = nlohmann::json::parse(r.out);
  for (const char* k : {"E", "A", "B", "alpha", "beta", "objective"}) CHECK(j.contains(k));
  CHECK(j["objective"].get<double>() <= 1.0183e-3);

  r = test::run_process(std::string(FITLAWS_PATH) + " power --data " + csv + " --x C --y nope");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("no column 'nope'"));
  r = test::run_process(std::string(FITLAWS_PATH) + " chinchilla --data " + csv + " --n C --loss S");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("--d COL or --flops COL"));
}

TEST_CASE("run directories: --pick final, best, highest, step and all choose the records they name") {
  const std::string d = scratch("picks");
  std::filesystem::create_directories(d);
  {
    std::ofstream m(d + "/metrics.jsonl");
    // Loss records without the metric in between: they are skipped, not errors.
    // The untrained model's record: no compute yet.
    m << nlohmann::json{{"step", 0},
                        {"alignment", 0.1},
                        {"params", 100},
                        {"compute_gflops", 0},
                        {"image_noun_pairs", 0}}
             .dump()
      << "\n";
    const double scores[] = {0.2, 0.6, 0.5};
    for (int i = 0; i < 3; ++i) {
      m << nlohmann::json{{"step", 10 * (i + 1)},
                          {"loss", 1.0 / (i + 1)},
                          {"params", 100},
                          {"compute_gflops", 10 * (i + 1)},
                          {"image_noun_pairs", 5 * i}}
               .dump()
        << "\n";
      m << nlohmann::json{{"step", 10 * (i + 1)},
                          {"alignment", scores[i]},
                          {"params", 100},
                          {"compute_gflops", 10 * (i + 1)},
                          {"image_noun_pairs", 5 * i}}
               .dump()
        << "\n";
    }
  }
  auto values = [&](RunPick pick, long long step = -1) {
    return read_runs({d}, "alignment", pick, step).numeric("alignment");
  };
  CHECK(values(RunPick::kFinal) == std::vector<double>{0.5});
  CHECK(values(RunPick::kBest) == std::vector<double>{0.1});
  CHECK(values(RunPick::kHighest) == std::vector<double>{0.6});
  CHECK(values(RunPick::kStep, 20) == std::vector<double>{0.6});
  CHECK(values(RunPick::kStep, 0) == std::vector<double>{0.1});
  // Every record after training began; the step-0 one left out with a note saying so.
  const Table all = read_runs({d}, "alignment", RunPick::kAll);
  CHECK(all.numeric("alignment") == std::vector<double>{0.2, 0.6, 0.5});
  CHECK(all.numeric("C") == std::vector<double>{10, 20, 30});
  REQUIRE(all.notes.size() == 1);
  CHECK_THAT(all.notes[0], Catch::Contains("1 record(s)") && Catch::Contains("step 0"));
  CHECK_THROWS_WITH(read_runs({d}, "alignment", RunPick::kStep, 15),
                    Catch::Contains("no record with 'alignment' at step 15"));
  CHECK_THROWS_WITH(read_runs({d}, "fid", RunPick::kAll), Catch::Contains("no record with 'fid'"));
}
