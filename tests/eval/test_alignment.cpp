// The score: per image the fraction right, per run the mean over prompts, per category, with a
// seeded bootstrap interval and the chance level — against hand-computed values.
#include <catch2/catch.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/eval/alignment.h"

using namespace dtrainer;
using namespace dtrainer::eval;

namespace {
Question q(Category c, size_t choices) {
  Question x;
  x.category = c;
  x.choices.assign(choices, "a");
  return x;
}
}  // namespace

TEST_CASE("the score, its categories and chance levels, by hand") {
  // Prompt 0: a yes/no and a 4-way question, two images: (right, wrong) and (right, right).
  // Prompt 1: a yes/no question, one image, wrong.
  PromptResult a{0, {q(Category::kPresence, 2), q(Category::kPosition, 4)}, {{true, false}, {true, true}}};
  PromptResult b{1, {q(Category::kPresence, 2)}, {{false}}};
  const AlignmentScore s = score_alignment({a, b}, 500, 3);
  CHECK(s.per_prompt[0] == Approx((0.5 + 1.0) / 2));
  CHECK(s.per_prompt[1] == 0);
  CHECK(s.overall.mean == Approx(0.375));
  CHECK(s.overall.chance == Approx(((0.5 + 0.25) / 2 + 0.5) / 2));
  CHECK(s.by_category.at(Category::kPresence).mean == Approx((1.0 + 0.0) / 2));
  CHECK(s.by_category.at(Category::kPosition).mean == Approx(0.5));
  CHECK(s.by_category.at(Category::kPosition).prompts == 1);
  CHECK(s.by_category.count(Category::kCount) == 0);
  CHECK(s.images == 3);
  // Two prompts of scores 0.75 and 0: resampled means are 0, 0.375 or 0.75.
  CHECK(s.overall.lo == 0);
  CHECK(s.overall.hi == Approx(0.75));
  const AlignmentScore again = score_alignment({a, b}, 500, 3);
  CHECK(again.to_json() == s.to_json());  // seeded: reproducible
  CHECK_THROWS_WITH(score_alignment({}), Catch::Contains("no prompts"));
  PromptResult bad{2, {q(Category::kCount, 4)}, {{true, false}}};
  CHECK_THROWS_WITH(score_alignment({bad}), Catch::Contains("2 answers for 1 questions"));
}
