#include <catch2/catch.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/core/name_table.h"
#include "dtrainer/core/parse.h"

using namespace dtrainer;

TEST_CASE("parse_int_list reads comma lists and names the bad item") {
  CHECK(parse_int_list("f", "1, 2,4") == std::vector<int64_t>{1, 2, 4});
  CHECK(parse_int_list("f", "").empty());
  CHECK(format_int_list({0, 2, 10}) == "0,2,10");
  try {
    parse_int_list("model.channel_mult", "1,x,4");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "model.channel_mult[1]: expected an integer, got 'x'");
    CHECK(e.where() == "model.channel_mult[1]");
  }
}

TEST_CASE("parse_int and parse_bool reject trailing garbage and unknown words") {
  CHECK(parse_int("f", " 320 ") == 320);
  CHECK_THROWS_AS(parse_int("f", "32O"), Error);
  CHECK_THROWS_AS(parse_int("f", "99999999999999999999"), Error);
  CHECK(parse_bool("f", "TRUE"));
  CHECK_FALSE(parse_bool("f", "off"));
  CHECK_THROWS_WITH(parse_bool("model.use_linear_projection", "maybe"),
                    "model.use_linear_projection: expected true or false, got 'maybe'");
}

TEST_CASE("a name table maps names both ways and lists the accepted ones on error") {
  enum class Fruit { kApple, kPear };
  const NameTable<Fruit> table = {{"apple", Fruit::kApple}, {"pear", Fruit::kPear}};
  CHECK(table.parse("f", "pear") == Fruit::kPear);
  CHECK_THROWS_WITH(table.parse("menu.fruit", "plum"), "menu.fruit: expected one of apple, pear; got 'plum'");
  CHECK(std::string(table.name(Fruit::kApple)) == "apple");
  CHECK(table.joined() == "apple | pear");
  CHECK_FALSE(table.find("plum").has_value());
}
