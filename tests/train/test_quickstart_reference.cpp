// The quickstart trains as the recorded reference does (tests/train/quickstart_reference.json, made
// by scripts/record_quickstart_reference.sh from the code before a redesign): the per-step training
// losses of its first 60 steps on 2 ranks x 1 thread. On the CPU model that recorded them they must
// be bitwise equal; elsewhere another BLAS kernel may round differently, and they must agree to
// 1e-4 relative (a changed noise key, data order or update misses that by orders of magnitude).
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "train/dtrainer_runner.h"

using namespace dtrainer;

namespace {

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      std::string m = line.substr(colon + 1);
      return m.substr(m.find_first_not_of(' '));
    }
  return "unknown";
}

}  // namespace

TEST_CASE("the quickstart's per-step losses are those recorded before the redesign") {
  const auto ref = nlohmann::json::parse(test::slurp(REFERENCE_JSON));
  const std::string dir = test::scratch_dir("quickstart-reference");
  std::string args = ref["args"].get<std::string>();
  args.replace(args.find("RUN"), 3, dir + "/run");
  const std::string cmd = std::string(MPIEXEC) + " --allow-run-as-root --oversubscribe -n 2 -x OMP_NUM_THREADS=1 " +
                          DTRAINER_PATH + " " + args + " > " + dir + "/log 2>&1";
  const int rc = std::system(("cd " + std::string(SOURCE_DIR) + " && " + cmd).c_str());
  INFO(test::slurp(dir + "/log"));
  REQUIRE(rc == 0);
  const auto records = test::training_records(dir + "/run");
  const auto& want = ref["losses"];
  REQUIRE(records.size() == want.size());
  const bool same_cpu = cpu_model() == ref["cpu"].get<std::string>();
  INFO("reference from commit " << ref["commit"].get<std::string>() << " on " << ref["cpu"].get<std::string>()
                                << (same_cpu ? " (this CPU: bitwise)" : " (another CPU: 1e-4 relative)"));
  int64_t step = 1;
  for (const auto& w : want) {
    const double got = records.at(step).at("loss").get<double>(), expected = w.get<double>();
    INFO("step " << step << ": " << got << " vs " << expected);
    if (same_cpu)
      CHECK(got == expected);
    else
      CHECK(std::abs(got - expected) <= 1e-4 * std::abs(expected));
    ++step;
  }
}
