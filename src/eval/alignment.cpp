#include "dtrainer/eval/alignment.h"

#include <algorithm>
#include <cmath>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"

namespace dtrainer::eval {
namespace {

// A prompt's score over the questions `keep` selects: the mean over images of the fraction
// answered right; and the chance level over the same questions. NaN when none is selected.
template <typename Keep>
std::pair<double, double> prompt_score(const PromptResult& r, Keep keep) {
  double chance = 0, n = 0;
  for (size_t j = 0; j < r.questions.size(); ++j)
    if (keep(r.questions[j])) chance += 1.0 / static_cast<double>(r.questions[j].choices.size()), ++n;
  if (n == 0) return {std::nan(""), std::nan("")};
  double score = 0;
  for (const auto& row : r.correct) {
    double right = 0;
    for (size_t j = 0; j < r.questions.size(); ++j)
      if (keep(r.questions[j]) && row[j]) ++right;
    score += right / n;
  }
  return {score / static_cast<double>(r.correct.size()), chance / n};
}

ScoreSummary summarise(const std::vector<double>& scores, const std::vector<double>& chances, int64_t questions,
                       int64_t bootstrap, uint64_t seed, uint64_t stream) {
  ScoreSummary s;
  std::vector<double> v, c;
  for (size_t i = 0; i < scores.size(); ++i)
    if (!std::isnan(scores[i])) v.push_back(scores[i]), c.push_back(chances[i]);
  s.prompts = static_cast<int64_t>(v.size());
  s.questions = questions;
  if (v.empty()) return s;
  for (size_t i = 0; i < v.size(); ++i)
    s.mean += v[i] / static_cast<double>(v.size()), s.chance += c[i] / static_cast<double>(c.size());
  s.lo = s.hi = s.mean;
  if (bootstrap < 2 || v.size() < 2) return s;
  std::vector<double> means(static_cast<size_t>(bootstrap));
  for (int64_t b = 0; b < bootstrap; ++b) {
    StreamRng rng(stream_key(seed, RngPurpose::kEvaluation, stream, static_cast<uint64_t>(b)));
    double m = 0;
    for (size_t i = 0; i < v.size(); ++i)
      m += v[std::min(v.size() - 1, static_cast<size_t>(rng.uniform() * static_cast<double>(v.size())))];
    means[static_cast<size_t>(b)] = m / static_cast<double>(v.size());
  }
  std::sort(means.begin(), means.end());
  auto q = [&](double p) {
    return means[std::min(means.size() - 1, static_cast<size_t>(p * static_cast<double>(means.size() - 1) + 0.5))];
  };
  s.lo = q(0.025);
  s.hi = q(0.975);
  return s;
}

nlohmann::json summary_json(const ScoreSummary& s) {
  return {{"score", s.mean},
          {"interval", {s.lo, s.hi}},
          {"chance", s.chance},
          {"prompts", s.prompts},
          {"questions", s.questions}};
}

}  // namespace

AlignmentScore score_alignment(const std::vector<PromptResult>& results, int64_t bootstrap, uint64_t seed) {
  if (results.empty()) throw Error("alignment", "no prompts to score");
  AlignmentScore a;
  a.bootstrap = bootstrap;
  a.seed = seed;
  std::vector<double> chance;
  int64_t questions = 0;
  for (const auto& r : results) {
    if (r.correct.empty()) throw Error("alignment", "prompt " + std::to_string(r.prompt) + " has no image");
    for (const auto& row : r.correct)
      if (row.size() != r.questions.size())
        throw Error("alignment", "prompt " + std::to_string(r.prompt) + ": " + std::to_string(row.size()) +
                                     " answers for " + std::to_string(r.questions.size()) + " questions");
    const auto [score, ch] = prompt_score(r, [](const Question&) { return true; });
    a.per_prompt.push_back(score);
    chance.push_back(ch);
    a.images += static_cast<int64_t>(r.correct.size());
    questions += static_cast<int64_t>(r.questions.size());
  }
  a.overall = summarise(a.per_prompt, chance, questions, bootstrap, seed, 0);
  for (Category cat : all_categories()) {
    std::vector<double> s, c;
    int64_t n = 0;
    for (const auto& r : results) {
      const auto [score, ch] = prompt_score(r, [&](const Question& q) { return q.category == cat; });
      s.push_back(score);
      c.push_back(ch);
      n += std::count_if(r.questions.begin(), r.questions.end(), [&](const Question& q) { return q.category == cat; });
    }
    if (n > 0) a.by_category[cat] = summarise(s, c, n, bootstrap, seed, 1 + static_cast<uint64_t>(cat));
  }
  return a;
}

nlohmann::json AlignmentScore::to_json() const {
  nlohmann::json j = summary_json(overall);
  j["images"] = images;
  j["bootstrap"] = bootstrap;
  j["seed"] = seed;
  nlohmann::json cats = nlohmann::json::object();
  for (const auto& [c, s] : by_category) cats[to_string(c)] = summary_json(s);
  j["by_category"] = cats;
  return j;
}

}  // namespace dtrainer::eval
