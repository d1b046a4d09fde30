// Agreement on failure (parallel/agreement.h): a failure on some ranks becomes the same
// CollectiveError on every rank, naming the lowest failing rank; success costs nothing visible.
// And the watchdog's bound, in closed form.
#include <catch2/catch.hpp>

#include <cmath>
#include <stdexcept>
#include <string>

#include "parallel/mpi_test_runtime.h"
#include "dtrainer/core/error.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/watchdog.h"

using namespace dtrainer;

TEST_CASE("a failure on some ranks is every rank's CollectiveError, naming the lowest failing rank") {
  auto& rt = test::mpi_runtime();
  const int W = rt.world(), R = rt.rank();
  REQUIRE(W >= 2);
  CHECK_NOTHROW(parallel::agree(rt.comm(), [] {}));
  for (int failing = 1; failing < W; ++failing) {  // ranks >= failing fail, with their own message
    INFO("ranks " << failing << ".. fail");
    try {
      parallel::agree(rt.comm(), [&] {
        if (R >= failing) throw Error("file-" + std::to_string(R), "no space");
      });
      FAIL("no CollectiveError on rank " << R);
    } catch (const CollectiveError& e) {
      CHECK(e.rank() == failing);
      CHECK(e.failures() == W - failing);
      CHECK(e.where() == "rank " + std::to_string(failing));
      CHECK_THAT(e.detail(), Catch::StartsWith("file-" + std::to_string(failing) + ": no space"));
      if (W - failing > 1)
        CHECK_THAT(e.detail(), Catch::Contains("and " + std::to_string(W - failing - 1) + " other rank"));
    }
  }
  // Any exception type counts; a CollectiveError raised inside is passed on as it is.
  CHECK_THROWS_AS(parallel::agree(rt.comm(),
                              [&] {
                                if (R == 0) throw std::runtime_error("plain");
                              }),
                  CollectiveError);
  try {
    parallel::agree(rt.comm(), [&] { parallel::agree_on(rt.comm(), R == W - 1 ? "inner" : ""); });
    FAIL("no error");
  } catch (const CollectiveError& e) {
    CHECK(e.rank() == W - 1);
    CHECK(e.detail() == "inner");
  }
}

TEST_CASE("the watchdog's limit: the absolute bound until 3 durations are known, then factor x median, floored") {
  parallel::WatchdogConfig c;
  c.timeout_s = 100;
  c.factor = 10;
  c.min_s = 5;
  CHECK(parallel::watchdog_limit(c, {}) == 100);
  CHECK(parallel::watchdog_limit(c, {0.1, 0.2}) == 100);
  CHECK(parallel::watchdog_limit(c, {0.1, 0.2, 0.3}) == 5);          // 10 x 0.2 = 2 < the floor
  CHECK(parallel::watchdog_limit(c, {1, 3, 2, 100}) == Approx(30));  // median of {1, 2, 3, 100}: the upper middle, 3
  CHECK(parallel::watchdog_limit(c, {50, 60, 70}) == 100);           // capped by the absolute bound
  c.factor = 0;
  CHECK(parallel::watchdog_limit(c, {1, 1, 1}) == 100);
  c.timeout_s = 0;
  CHECK(std::isinf(parallel::watchdog_limit(c, {1, 1, 1})));
}
