#pragma once
// The alignment score of a set of generated images (TIFA-style): per image, the fraction of its
// prompt's questions the answerer gets right; per prompt, the mean over its images; per run, the
// mean over prompts — overall and per category — with a bootstrap 95% interval over prompts
// (seeded, so it is reproducible) and the chance level of a uniform random answerer beside each.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dtrainer/eval/questions.h"

namespace dtrainer::eval {

// One prompt's questions and, per generated image, whether each question was answered right.
struct PromptResult {
  int64_t prompt = 0;
  std::vector<Question> questions;
  std::vector<std::vector<bool>> correct;  // [image][question]
};

struct ScoreSummary {
  double mean = 0, lo = 0, hi = 0;  // over prompts; [lo, hi]: bootstrap 95% interval
  double chance = 0;                // a uniform random answerer's expected score
  int64_t prompts = 0, questions = 0;
};

struct AlignmentScore {
  ScoreSummary overall;
  std::map<Category, ScoreSummary> by_category;  // categories some prompt asks
  std::vector<double> per_prompt;                // each prompt's score (mean over its images)
  int64_t images = 0, bootstrap = 0;
  uint64_t seed = 0;
  nlohmann::json to_json() const;  // {"score", "interval", "chance", "by_category": {...}, ...}
};

// Throws Error when there are no prompts, or a prompt has no image or a correctness row whose
// length is not its question count.
AlignmentScore score_alignment(const std::vector<PromptResult>& results, int64_t bootstrap = 1000, uint64_t seed = 0);

}  // namespace dtrainer::eval
