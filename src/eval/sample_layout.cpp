#include "dtrainer/eval/sample_layout.h"

#include <cstdio>
#include <map>

#include "dtrainer/core/error.h"

namespace dtrainer::eval {

std::string prompt_dir_name(int64_t prompt) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%05lld", static_cast<long long>(prompt));
  return buf;
}

std::string image_relative_path(int64_t prompt, int64_t image) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%05lld/samples/%04lld.png", static_cast<long long>(prompt),
                static_cast<long long>(image));
  return buf;
}

namespace {

std::string inverse_relation(const std::string& r) {
  if (r == "left of") return "right of";
  if (r == "right of") return "left of";
  if (r == "above") return "below";
  if (r == "below") return "above";
  throw Error("eval_prompts.json", "unknown relation '" + r + "' (left of, right of, above, below)");
}

}  // namespace

nlohmann::json geneval_metadata(const nlohmann::json& prompt) {
  nlohmann::json out = prompt;
  nlohmann::json include = nlohmann::json::array();
  std::vector<int64_t> clause_of;  // object index -> its clause
  std::map<std::pair<std::string, std::string>, int64_t> clause_index;
  for (const auto& o : prompt.at("objects")) {
    const auto key = std::make_pair(o.at("shape").get<std::string>(), o.at("color").get<std::string>());
    auto it = clause_index.find(key);
    if (it == clause_index.end()) {
      it = clause_index.emplace(key, static_cast<int64_t>(include.size())).first;
      include.push_back({{"class", key.first}, {"count", 0}, {"color", key.second}});
    }
    include[static_cast<size_t>(it->second)]["count"] =
        include[static_cast<size_t>(it->second)]["count"].get<int64_t>() + 1;
    clause_of.push_back(it->second);
  }
  bool position = false;
  for (const auto& r : prompt.value("relations", nlohmann::json::array())) {
    const int64_t a = clause_of.at(r.at("subject").get<size_t>()), b = clause_of.at(r.at("object").get<size_t>());
    if (a == b) continue;  // (two objects of one kind: no clause can say which is where)
    // "subject REL object": the later clause gets its relation to the earlier one.
    const std::string rel = r.at("relation").get<std::string>();
    if (a < b)
      include[static_cast<size_t>(b)]["position"] = {inverse_relation(rel), a};
    else
      include[static_cast<size_t>(a)]["position"] = {rel, b};
    position = true;
  }
  const size_t objects = prompt.at("objects").size();
  out["tag"] = objects == 1 ? "single_object" : position ? "position" : include.size() == 1 ? "counting" : "color_attr";
  out["include"] = include;
  return out;
}

nlohmann::json tifa_question_answers(int64_t id, const std::string& caption, const std::vector<Question>& questions) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& q : questions)
    out.push_back({{"id", std::to_string(id)},
                   {"caption", caption},
                   {"question", q.text},
                   {"choices", q.choices},
                   {"answer", q.answer},
                   {"element_type", to_string(q.category)}});
  return out;
}

}  // namespace dtrainer::eval
