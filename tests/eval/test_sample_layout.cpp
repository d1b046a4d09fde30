// The output layout: directory and file names, and the GenEval metadata of hand-written prompts
// (expected clauses written out by hand from GenEval's metadata format).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "dtrainer/eval/sample_layout.h"

using namespace dtrainer;
using nlohmann::json;

TEST_CASE("layout names: five-digit prompt folders, four-digit PNGs under samples/") {
  CHECK(eval::prompt_dir_name(12) == "00012");
  CHECK(eval::image_relative_path(12, 3) == "00012/samples/0003.png");
  CHECK(eval::image_relative_path(0, 0) == "00000/samples/0000.png");
}

TEST_CASE("GenEval metadata: tags, one include clause per kind with its count and colour, relations as positions") {
  // One object.
  json one = json::parse(R"({"prompt": "one shape: a red circle at the top left", "count": 1,
      "objects": [{"shape": "circle", "color": "red", "position": "top left"}], "relations": []})");
  json m = eval::geneval_metadata(one);
  CHECK(m["tag"] == "single_object");
  CHECK(m["include"] == json::parse(R"([{"class": "circle", "count": 1, "color": "red"}])"));
  CHECK(m["prompt"] == one["prompt"]);  // (the prompt's own keys stay)
  CHECK(m["objects"] == one["objects"]);

  // Two kinds with a relation: subject 0 is left of object 1, so clause 1 is "right of" clause 0.
  json two = json::parse(R"({"prompt": "...", "count": 2,
      "objects": [{"shape": "square", "color": "blue", "position": "top left"}, {"shape": "triangle", "color": "green", "position": "top right"}],
      "relations": [{"subject": 0, "relation": "left of", "object": 1}]})");
  m = eval::geneval_metadata(two);
  CHECK(m["tag"] == "position");
  CHECK(m["include"] == json::parse(R"([{"class": "square", "count": 1, "color": "blue"},
                                        {"class": "triangle", "count": 1, "color": "green", "position": ["right of", 0]}])"));
  two["relations"][0]["relation"] = "above";
  CHECK(eval::geneval_metadata(two)["include"][1]["position"] == json::parse(R"(["below", 0])"));

  // Three objects, two of one kind: counted in one clause; no relation given.
  json three = json::parse(R"({"prompt": "...", "count": 3,
      "objects": [{"shape": "circle", "color": "red", "position": "top left"}, {"shape": "square", "color": "red", "position": "top right"},
                  {"shape": "circle", "color": "red", "position": "bottom left"}], "relations": []})");
  m = eval::geneval_metadata(three);
  CHECK(m["tag"] == "color_attr");
  CHECK(m["include"] ==
        json::parse(
            R"([{"class": "circle", "count": 2, "color": "red"}, {"class": "square", "count": 1, "color": "red"}])"));

  // One kind, several: counting; a relation between two objects of one kind cannot be a clause.
  json same = json::parse(R"({"prompt": "...", "count": 2,
      "objects": [{"shape": "disc", "color": "cyan", "position": "top left"}, {"shape": "disc", "color": "cyan", "position": "bottom left"}],
      "relations": [{"subject": 0, "relation": "above", "object": 1}]})");
  m = eval::geneval_metadata(same);
  CHECK(m["tag"] == "counting");
  CHECK(m["include"] == json::parse(R"([{"class": "disc", "count": 2, "color": "cyan"}])"));

  // A relation GenEval has no word for.
  two["relations"][0]["relation"] = "inside";
  CHECK_THROWS_WITH(eval::geneval_metadata(two), Catch::Contains("unknown relation 'inside'"));
}

TEST_CASE("TIFA question-answer pairs: one per question, keyed by the prompt index, with choices and category") {
  std::vector<eval::Question> qs(2);
  qs[0].category = eval::Category::kPresence;
  qs[0].text = "is there a red circle?";
  qs[0].answer = "yes";
  qs[0].choices = {"yes", "no"};
  qs[1].category = eval::Category::kCount;
  qs[1].text = "how many shapes are there?";
  qs[1].answer = "two";
  qs[1].choices = {"one", "two", "three", "four"};
  const json t = eval::tifa_question_answers(7, "a caption", qs);
  CHECK(t == json::parse(R"([
    {"id": "7", "caption": "a caption", "question": "is there a red circle?", "choices": ["yes", "no"], "answer": "yes", "element_type": "presence"},
    {"id": "7", "caption": "a caption", "question": "how many shapes are there?", "choices": ["one", "two", "three", "four"], "answer": "two", "element_type": "count"}])"));
}
