// The global order: rank-independent, disjoint slices, epochs are permutations, exact mixing.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include "dtrainer/core/error.h"
#include "dtrainer/data/global_order.h"

using namespace dtrainer;
using namespace dtrainer::data;

TEST_CASE("the union of rank slices is the 1-rank order, and the slices are disjoint") {
  const GlobalOrder order({37, 11}, {2.0, 1.0}, 12, 99);
  for (int64_t g : {0, 1, 5, 40}) {
    const auto whole = order.rank_slice(g, 0, 1);
    for (int64_t world : {2, 3, 4, 6}) {
      std::vector<SampleRef> joined;
      for (int64_t r = 0; r < world; ++r) {
        const auto part = order.rank_slice(g, r, world);
        joined.insert(joined.end(), part.begin(), part.end());
      }
      REQUIRE(joined.size() == whole.size());
      std::set<int64_t> ids;
      for (size_t i = 0; i < whole.size(); ++i) {
        CHECK(joined[i].dataset == whole[i].dataset);
        CHECK(joined[i].index == whole[i].index);
        CHECK(joined[i].id == whole[i].id);
        ids.insert(joined[i].id);
      }
      CHECK(ids.size() == whole.size());  // disjoint
    }
  }
}

TEST_CASE("each dataset epoch visits every image exactly once; epochs differ") {
  const int64_t N = 23, G = 5;
  const GlobalOrder order({N}, {}, G, 3);
  std::map<int64_t, std::multiset<int64_t>> per_epoch;
  std::vector<int64_t> first_epoch_order;
  for (int64_t g = 0; g < 3 * N; ++g)  // 3N batches of 5 = 15 epochs
    for (const auto& r : order.batch(g)) {
      per_epoch[r.epoch].insert(r.index);
      if (r.epoch == 0) first_epoch_order.push_back(r.index);
    }
  for (const auto& [epoch, seen] : per_epoch) {
    INFO("epoch " << epoch);
    CHECK(seen.size() == static_cast<size_t>(N));
    CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == static_cast<size_t>(N));
  }
  std::vector<int64_t> second;
  for (int64_t g = 0; g < 3 * N; ++g)
    for (const auto& r : order.batch(g))
      if (r.epoch == 1) second.push_back(r.index);
  CHECK(second != first_epoch_order);
}

TEST_CASE("mixing gives every batch its apportioned share of each dataset") {
  CHECK(apportion(10, {1, 1, 1}) == std::vector<int64_t>{4, 3, 3});
  CHECK(apportion(2048, {0.5, 0.3, 0.2}) == std::vector<int64_t>{1024, 614, 410});
  const GlobalOrder order({100, 50}, {3.0, 1.0}, 8, 1);
  CHECK(order.slots_per_dataset() == std::vector<int64_t>{6, 2});
  for (int64_t g = 0; g < 20; ++g) {
    int64_t from_second = 0;
    for (const auto& r : order.batch(g)) from_second += r.dataset;
    CHECK(from_second == 2);
  }
  CHECK(order.batch(3)[0].id == 24);
}

TEST_CASE("bad order configurations are rejected") {
  CHECK_THROWS_WITH(GlobalOrder({10}, {}, 6, 0).rank_slice(0, 0, 4), Catch::Contains("not divisible by the 4 ranks"));
  CHECK_THROWS_WITH(GlobalOrder({10, 10}, {1000.0, 1.0}, 8, 0), Catch::Contains("too small"));
  CHECK_THROWS_WITH(GlobalOrder({10, 0}, {}, 8, 0), Catch::Contains("dataset 1 is empty"));
  CHECK_THROWS_WITH(GlobalOrder({10}, {1.0, 2.0}, 8, 0), Catch::Contains("data.weights"));
}
