#pragma once
// TIFA-style questions for the prompts of the synthetic shapes world (eval_prompts.json: objects
// with colour, shape and grid cell, the count, the relation of the first two objects). Every
// question carries its category, its text, the ground-truth answer and a structured query that a
// programmatic answerer evaluates on what it detects in an image (eval/shapes_answerer.h).
//
// Per prompt, in this order:
//   presence  "is there a red circle?" (yes) for each object; for the first object, the same shape
//             in an absent colour and the same colour as an absent shape (no); "is there a shape at
//             the top left?" for every cell (yes / no)
//   shape     "what shape is at the top left?" for each object
//   color     "what color is the circle at the top left?" for each object
//   position  "where is the red circle?" for each object whose colour and shape are unique
//   count     "how many shapes are there?"
//   relation  "is the red circle left of the blue square?" (yes) and the opposite relation (no)
// The "no" questions keep a model that draws every colour and shape everywhere from scoring well.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dtrainer::eval {

enum class Category { kPresence, kShape, kColor, kPosition, kCount, kRelation };
constexpr int kCategories = 6;
const char* to_string(Category c);
const std::vector<Category>& all_categories();

// What a question asks, in the world's terms (indices into data::shape_colors(), shape_kinds(),
// shape_cells(); -1 where unused).
struct Query {
  enum class Kind {
    kHasObject,  // is there an object of `color` and `shape` anywhere
    kHasAnyAt,   // is there a shape at `cell`
    kShapeAt,    // the shape at `cell`
    kColorAt,    // the colour at `cell`
    kWhere,      // the cell of the object of `color` and `shape`
    kCount,      // how many shapes
    kRelation    // is (color, shape) `relation` (color2, shape2)
  } kind = Kind::kCount;
  int64_t color = -1, shape = -1, cell = -1, color2 = -1, shape2 = -1;
  std::string relation;  // left of | right of | above | below
};

struct Question {
  Category category = Category::kCount;
  std::string text, answer;
  std::vector<std::string> choices;  // the answers the question admits (chance = 1 / choices)
  Query query;
};

// The questions of one prompt (an element of eval_prompts.json's "prompts"). Throws Error naming
// `where` when the structure is missing or names an unknown colour, shape or cell.
std::vector<Question> questions_for_prompt(const nlohmann::json& prompt, const std::string& where);

// The prompts of an eval_prompts.json file, validated (version 1, a "prompts" list).
nlohmann::json read_eval_prompts(const std::string& path);

}  // namespace dtrainer::eval
