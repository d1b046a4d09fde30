#pragma once
// Where generated images and their descriptions go, so that the public evaluators run on them
// unchanged:
//   DIR/00012/metadata.jsonl        one line: the prompt and its structure, with GenEval's keys
//   DIR/00012/samples/0000.png      image 0 of prompt 12, lossless
//   DIR/tifa_images.json            {"12": "00012/samples/0000.png", ...} (TIFA's id -> image map)
//   DIR/tifa_questions.json         the questions in TIFA's question-answer format
//   DIR/manifest.json, DIR/alignment.json   what made the images; the score (dteval, the trainer)

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "dtrainer/eval/questions.h"

namespace dtrainer::eval {

std::string prompt_dir_name(int64_t prompt);                     // "00012"
std::string image_relative_path(int64_t prompt, int64_t image);  // "00012/samples/0000.png"

// A prompt of eval_prompts.json (prompt, count, objects, relations) with the keys GenEval's
// evaluate_images.py reads added:
//   "tag": "single_object" (one object), "position" (a relation between two different kinds),
//          "counting" (one kind, several), else "color_attr";
//   "include": one clause per kind of object (shape and colour, in order of first mention):
//          {"class": shape, "count": how many, "color": colour}, and on the relation's second
//          kind "position": [its relation to the first ("left of", "right of", "above", "below"),
//          the first kind's clause index] (GenEval checks a clause against earlier clauses only).
nlohmann::json geneval_metadata(const nlohmann::json& prompt);

// The questions of prompt `id` as TIFA's benchmark reads them: one object per question with "id"
// (the prompt index as text, the key of tifa_images.json), "caption", "question", "choices",
// "answer" and "element_type" (the category), so TIFA's VQA scorer can answer the same questions.
nlohmann::json tifa_question_answers(int64_t id, const std::string& caption, const std::vector<Question>& questions);

}  // namespace dtrainer::eval
