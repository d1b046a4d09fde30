// Questions from prompts: for hand-written scenes, the exact questions and answers (written out
// here, not generated), the categories, the "no" questions, and bad prompts refused by name.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>

#include <nlohmann/json.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"
#include "dtrainer/data/shapes_scene.h"
#include "dtrainer/eval/questions.h"

using namespace dtrainer;
using namespace dtrainer::eval;
using nlohmann::json;

namespace {
std::vector<std::pair<std::string, std::string>> text_and_answers(const std::vector<Question>& q) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& x : q) out.emplace_back(x.text, x.answer);
  return out;
}
}  // namespace

TEST_CASE("a red circle left of a blue square: the exact questions, answers and categories") {
  const json prompt = {{"prompt", "two shapes: a red circle at the top left and a blue square at the bottom right"},
                       {"count", 2},
                       {"objects",
                        {{{"color", "red"}, {"shape", "circle"}, {"position", "top left"}},
                         {{"color", "blue"}, {"shape", "square"}, {"position", "bottom right"}}}},
                       {"relations", {{{"subject", 0}, {"relation", "left of"}, {"object", 1}}}}};
  const auto q = questions_for_prompt(prompt, "test");
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"is there a red circle?", "yes"},
      {"is there a blue square?", "yes"},
      {"is there a green circle?", "no"},  // the first object's shape in an absent colour
      {"is there a red square?", "no"},    // its colour as an absent shape
      {"is there a shape at the top left?", "yes"},
      {"is there a shape at the top right?", "no"},
      {"is there a shape at the bottom left?", "no"},
      {"is there a shape at the bottom right?", "yes"},
      {"what shape is at the top left?", "circle"},
      {"what shape is at the bottom right?", "square"},
      {"what color is the circle at the top left?", "red"},
      {"what color is the square at the bottom right?", "blue"},
      {"where is the red circle?", "top left"},
      {"where is the blue square?", "bottom right"},
      {"how many shapes are there?", "two"},
      {"is the red circle left of the blue square?", "yes"},
      {"is the red circle right of the blue square?", "no"},
  };
  CHECK(text_and_answers(q) == expected);
  std::map<Category, int> per;
  for (const auto& x : q) ++per[x.category];
  CHECK(per[Category::kPresence] == 8);
  CHECK(per[Category::kShape] == 2);
  CHECK(per[Category::kColor] == 2);
  CHECK(per[Category::kPosition] == 2);
  CHECK(per[Category::kCount] == 1);
  CHECK(per[Category::kRelation] == 2);
  for (const auto& x : q) {
    INFO(x.text);
    CHECK(std::find(x.choices.begin(), x.choices.end(), x.answer) !=
          x.choices.end());  // the answer is one of the choices
  }
  CHECK(q[8].choices.size() == 3);   // shapes
  CHECK(q[10].choices.size() == 6);  // colours
  CHECK(q[12].choices.size() == 4);  // cells
}

TEST_CASE("two objects of one description: no position or relation question that would be ambiguous") {
  const json prompt = {{"objects",
                        {{{"color", "yellow"}, {"shape", "triangle"}, {"position", "top left"}},
                         {{"color", "yellow"}, {"shape", "triangle"}, {"position", "top right"}},
                         {{"color", "cyan"}, {"shape", "circle"}, {"position", "bottom left"}}}},
                       {"relations", {{{"subject", 0}, {"relation", "left of"}, {"object", 1}}}}};
  const auto q = questions_for_prompt(prompt, "test");
  std::vector<std::string> where, relation;
  for (const auto& x : q) {
    if (x.category == Category::kPosition) where.push_back(x.text + " " + x.answer);
    if (x.category == Category::kRelation) relation.push_back(x.text);
  }
  CHECK(where == std::vector<std::string>{"where is the cyan circle? bottom left"});
  CHECK(relation.empty());
  // Absent variants skip what is there: yellow -> magenta triangle; triangle -> circle (yellow circle absent).
  CHECK(q[3].text == "is there a magenta triangle?");
  CHECK(q[3].answer == "no");
  CHECK(q[4].text == "is there a yellow circle?");
  CHECK(q[4].answer == "no");
  CHECK(q.back().text == "how many shapes are there?");
  CHECK(q.back().answer == "three");
}

TEST_CASE("every prompt the dataset writes gives questions whose answers are the ground truth") {
  StreamRng rng(123);
  for (int i = 0; i < 200; ++i) {
    const data::ShapesScene scene = data::random_scene(rng);
    const auto q = questions_for_prompt(data::scene_ground_truth(scene), "scene " + std::to_string(i));
    int yes = 0, no = 0, objects = static_cast<int>(scene.objects.size());
    for (const auto& x : q) {
      yes += x.answer == "yes";
      no += x.answer == "no";
      if (x.query.kind == Query::Kind::kHasAnyAt)
        CHECK((x.answer == "yes") == std::any_of(scene.objects.begin(), scene.objects.end(),
                                                 [&](const data::ShapeObject& o) { return o.cell == x.query.cell; }));
    }
    INFO(data::scene_ground_truth(scene).dump());
    CHECK(no >= 2 + (4 - objects));  // two absent descriptions and every empty cell: "no" questions in every prompt
    CHECK(yes >= 2 * objects);
  }
}

TEST_CASE("prompts without their structure are refused, naming the prompt") {
  CHECK_THROWS_WITH(questions_for_prompt(json{{"prompt", "a red circle"}}, "eval_prompts.json: prompt 3"),
                    Catch::Contains("eval_prompts.json: prompt 3") && Catch::Contains("no 'objects' list"));
  CHECK_THROWS_WITH(questions_for_prompt(
                        json{{"objects", {{{"color", "purple"}, {"shape", "circle"}, {"position", "top left"}}}}}, "p"),
                    Catch::Contains("unknown color 'purple'"));
  CHECK_THROWS_WITH(questions_for_prompt(json{{"objects", {{{"color", "red"}, {"position", "top left"}}}}}, "p"),
                    Catch::Contains("'shape'"));
  CHECK_THROWS_WITH(questions_for_prompt(json{{"objects",
                                               {{{"color", "red"}, {"shape", "circle"}, {"position", "top left"}},
                                                {{"color", "red"}, {"shape", "square"}, {"position", "top left"}}}}},
                                         "p"),
                    Catch::Contains("two objects in the cell 'top left'"));
  CHECK_THROWS_WITH(
      questions_for_prompt(json{{"objects", {{{"color", "red"}, {"shape", "circle"}, {"position", "top left"}}}},
                                {"relations", {{{"subject", 0}, {"relation", "left of"}, {"object", 5}}}}},
                           "p"),
      Catch::Contains("relation names objects that are not there"));
}
