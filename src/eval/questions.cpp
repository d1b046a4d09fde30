#include "dtrainer/eval/questions.h"

#include <algorithm>
#include <map>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/data/shapes_scene.h"

namespace dtrainer::eval {
namespace {

int64_t index_of(const std::vector<std::string>& names, const nlohmann::json& j, const std::string& field,
                 const std::string& where) {
  if (!j.contains(field) || !j[field].is_string()) throw Error(where, "object without a '" + field + "' name");
  const auto it = std::find(names.begin(), names.end(), j[field].get<std::string>());
  if (it == names.end()) throw Error(where, "unknown " + field + " '" + j[field].get<std::string>() + "'");
  return it - names.begin();
}

const std::vector<std::string> kYesNo = {"yes", "no"};

std::string opposite(const std::string& r) {
  if (r == "left of") return "right of";
  if (r == "right of") return "left of";
  if (r == "above") return "below";
  return "above";
}

}  // namespace

const char* to_string(Category c) {
  switch (c) {
    case Category::kPresence: return "presence";
    case Category::kShape: return "shape";
    case Category::kColor: return "color";
    case Category::kPosition: return "position";
    case Category::kCount: return "count";
    case Category::kRelation: return "relation";
  }
  return "?";
}

const std::vector<Category>& all_categories() {
  static const std::vector<Category> v = {Category::kPresence, Category::kShape, Category::kColor,
                                          Category::kPosition, Category::kCount, Category::kRelation};
  return v;
}

std::vector<Question> questions_for_prompt(const nlohmann::json& prompt, const std::string& where) {
  const auto& colors = data::shape_colors();
  const auto& kinds = data::shape_kinds();
  const auto& cells = data::shape_cells();
  if (!prompt.is_object() || !prompt.contains("objects") || !prompt["objects"].is_array() || prompt["objects"].empty())
    throw Error(where,
                "has no 'objects' list (a prompt of the shapes world needs its objects: color, shape, position)");
  struct Obj {
    int64_t color, shape, cell;
  };
  std::vector<Obj> objs;
  for (const auto& o : prompt["objects"])
    objs.push_back({index_of(colors, o, "color", where), index_of(kinds, o, "shape", where),
                    index_of(cells, o, "position", where)});
  std::vector<bool> occupied(cells.size(), false);
  for (const auto& o : objs) {
    if (occupied[o.cell]) throw Error(where, "two objects in the cell '" + cells[o.cell] + "'");
    occupied[o.cell] = true;
  }
  auto has = [&](int64_t c, int64_t s) {
    return std::any_of(objs.begin(), objs.end(), [&](const Obj& o) { return o.color == c && o.shape == s; });
  };
  auto name = [&](int64_t c, int64_t s) { return colors[c] + " " + kinds[s]; };

  std::vector<Question> q;
  auto add = [&](Category cat, std::string text, std::string answer, std::vector<std::string> choices, Query query) {
    q.push_back({cat, std::move(text), std::move(answer), std::move(choices), std::move(query)});
  };
  // presence
  for (const auto& o : objs) {
    Query k;
    k.kind = Query::Kind::kHasObject, k.color = o.color, k.shape = o.shape;
    add(Category::kPresence, "is there a " + name(o.color, o.shape) + "?", "yes", kYesNo, k);
  }
  {
    const Obj& first = objs.front();
    for (int64_t d = 1; d < static_cast<int64_t>(colors.size()); ++d) {  // the first object's shape in an absent colour
      const int64_t c = (first.color + d) % static_cast<int64_t>(colors.size());
      if (has(c, first.shape)) continue;
      Query k;
      k.kind = Query::Kind::kHasObject, k.color = c, k.shape = first.shape;
      add(Category::kPresence, "is there a " + name(c, first.shape) + "?", "no", kYesNo, k);
      break;
    }
    for (int64_t d = 1; d < static_cast<int64_t>(kinds.size()); ++d) {  // the first object's colour as an absent shape
      const int64_t s = (first.shape + d) % static_cast<int64_t>(kinds.size());
      if (has(first.color, s)) continue;
      Query k;
      k.kind = Query::Kind::kHasObject, k.color = first.color, k.shape = s;
      add(Category::kPresence, "is there a " + name(first.color, s) + "?", "no", kYesNo, k);
      break;
    }
  }
  for (int64_t c = 0; c < static_cast<int64_t>(cells.size()); ++c) {
    Query k;
    k.kind = Query::Kind::kHasAnyAt, k.cell = c;
    add(Category::kPresence, "is there a shape at the " + cells[c] + "?", occupied[c] ? "yes" : "no", kYesNo, k);
  }
  // shape, colour
  for (const auto& o : objs) {
    Query k;
    k.kind = Query::Kind::kShapeAt, k.cell = o.cell;
    add(Category::kShape, "what shape is at the " + cells[o.cell] + "?", kinds[o.shape], kinds, k);
  }
  for (const auto& o : objs) {
    Query k;
    k.kind = Query::Kind::kColorAt, k.cell = o.cell;
    add(Category::kColor, "what color is the " + kinds[o.shape] + " at the " + cells[o.cell] + "?", colors[o.color],
        colors, k);
  }
  // position (only where the colour and shape name one object)
  for (const auto& o : objs) {
    const auto same =
        std::count_if(objs.begin(), objs.end(), [&](const Obj& p) { return p.color == o.color && p.shape == o.shape; });
    if (same != 1) continue;
    Query k;
    k.kind = Query::Kind::kWhere, k.color = o.color, k.shape = o.shape;
    add(Category::kPosition, "where is the " + name(o.color, o.shape) + "?", cells[o.cell], cells, k);
  }
  // count
  {
    static const std::vector<std::string> counts = {"one", "two", "three", "four"};
    Query k;
    k.kind = Query::Kind::kCount;
    add(Category::kCount, "how many shapes are there?", counts.at(objs.size() - 1), counts, k);
  }
  // relation
  if (prompt.contains("relations") && prompt["relations"].is_array()) {
    for (const auto& r : prompt["relations"]) {
      if (!r.contains("subject") || !r.contains("object") || !r.contains("relation") || !r["relation"].is_string())
        throw Error(where, "a relation needs subject, relation and object");
      const int64_t a = r["subject"].get<int64_t>(), b = r["object"].get<int64_t>();
      if (a < 0 || b < 0 || a >= static_cast<int64_t>(objs.size()) || b >= static_cast<int64_t>(objs.size()) || a == b)
        throw Error(where, "a relation names objects that are not there");
      const std::string rel = r["relation"].get<std::string>();
      const auto unique = [&](const Obj& o) {
        return std::count_if(objs.begin(), objs.end(),
                             [&](const Obj& p) { return p.color == o.color && p.shape == o.shape; }) == 1;
      };
      if (!unique(objs[a]) || !unique(objs[b]))
        continue;  // (two objects of one description: the question would be ambiguous)
      if (rel != "left of" && rel != "right of" && rel != "above" && rel != "below")
        throw Error(where, "unknown relation '" + rel + "'");
      for (const auto& [asked, answer] : {std::pair<std::string, std::string>{rel, "yes"}, {opposite(rel), "no"}}) {
        Query k;
        k.kind = Query::Kind::kRelation;
        k.color = objs[a].color, k.shape = objs[a].shape, k.color2 = objs[b].color, k.shape2 = objs[b].shape,
        k.relation = asked;
        add(Category::kRelation,
            "is the " + name(objs[a].color, objs[a].shape) + " " + asked + " the " +
                name(objs[b].color, objs[b].shape) + "?",
            answer, kYesNo, k);
      }
    }
  }
  return q;
}

nlohmann::json read_eval_prompts(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object() || j.value("version", 0) != 1 || !j.contains("prompts") || !j["prompts"].is_array() ||
      j["prompts"].empty())
    throw Error(path, "not an eval_prompts.json of version 1 with a non-empty 'prompts' list");
  return j;
}

}  // namespace dtrainer::eval
