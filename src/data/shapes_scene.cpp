#include "dtrainer/data/shapes_scene.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "dtrainer/core/rng.h"

namespace dtrainer::data {

const std::vector<std::string>& shape_colors() {
  static const std::vector<std::string> v = {"red", "green", "blue", "yellow", "magenta", "cyan"};
  return v;
}
const std::vector<std::string>& shape_kinds() {
  static const std::vector<std::string> v = {"circle", "square", "triangle"};
  return v;
}
const std::vector<std::string>& shape_cells() {
  static const std::vector<std::string> v = {"top left", "top right", "bottom left", "bottom right"};
  return v;
}

std::vector<float> shape_color_rgb(int64_t c) {
  static const float rgb[6][3] = {{1, -1, -1}, {-1, 1, -1}, {-1, -1, 1}, {1, 1, -1}, {1, -1, 1}, {-1, 1, 1}};
  return {rgb[c][0], rgb[c][1], rgb[c][2]};
}

ShapesScene random_scene(StreamRng& rng) {
  ShapesScene s;
  const int64_t n = 1 + static_cast<int64_t>(rng.uniform() * 4);
  std::vector<int64_t> cells = {0, 1, 2, 3};
  for (int64_t i = 3; i > 0; --i) std::swap(cells[i], cells[static_cast<int64_t>(rng.uniform() * (i + 1))]);
  for (int64_t i = 0; i < n; ++i)
    s.objects.push_back({static_cast<int64_t>(rng.uniform() * 6), static_cast<int64_t>(rng.uniform() * 3), cells[i]});
  std::sort(s.objects.begin(), s.objects.end(),
            [](const ShapeObject& a, const ShapeObject& b) { return a.cell < b.cell; });
  return s;
}

torch::Tensor render_scene(const ShapesScene& scene, int64_t size) {
  torch::Tensor img = torch::full({3, size, size}, -1.0f);
  auto acc = img.accessor<float, 3>();
  const double cell = size / 2.0, r = cell * 0.4;
  for (const auto& o : scene.objects) {
    const double cx = (o.cell % 2 + 0.5) * cell, cy = (o.cell / 2 + 0.5) * cell;
    const auto rgb = shape_color_rgb(o.color);
    for (int64_t y = 0; y < size; ++y)
      for (int64_t x = 0; x < size; ++x) {
        const double px = x + 0.5 - cx, py = y + 0.5 - cy;
        bool inside = false;
        if (o.kind == 0)
          inside = px * px + py * py <= r * r;  // circle
        else if (o.kind == 1)
          inside = std::abs(px) <= r * 0.85 && std::abs(py) <= r * 0.85;  // square
        else
          inside = py <= r && py >= -r && std::abs(px) <= (py + r) / 2;  // triangle, apex up
        if (inside)
          for (int c = 0; c < 3; ++c) acc[c][y][x] = rgb[c];
      }
  }
  return img;
}

namespace {

std::string count_word(size_t n) {
  static const char* w[] = {"no", "one", "two", "three", "four"};
  return w[n];
}

std::string describe(const ShapeObject& o) { return shape_colors()[o.color] + " " + shape_kinds()[o.kind]; }

// The relation between the first two objects: left of / right of / above / below.
std::string relation(const ShapeObject& a, const ShapeObject& b) {
  if (a.cell % 2 != b.cell % 2) return a.cell % 2 < b.cell % 2 ? "left of" : "right of";
  return a.cell / 2 < b.cell / 2 ? "above" : "below";
}

std::string join(const std::vector<std::string>& parts, const std::string& sep, const std::string& last) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i == 0 ? "" : (i + 1 == parts.size() ? last : sep)) + parts[i];
  return s;
}

}  // namespace

std::vector<std::string> scene_captions(const ShapesScene& scene) {
  std::vector<std::string> plain, located, kinds;
  for (const auto& o : scene.objects) {
    plain.push_back(describe(o));
    located.push_back("a " + describe(o) + " at the " + shape_cells()[o.cell]);
    kinds.push_back("a " + shape_kinds()[o.kind]);
  }
  const size_t n = scene.objects.size();
  const std::string shapes = n == 1 ? "shape" : "shapes";
  std::string rel;
  if (n >= 2)
    rel = ". the " + describe(scene.objects[0]) + " is " + relation(scene.objects[0], scene.objects[1]) + " the " +
          describe(scene.objects[1]);
  std::vector<std::string> plain_a;
  for (const auto& p : plain) plain_a.push_back("a " + p);
  return {
      join(plain, ", ", " and "),                                                // original: short
      count_word(n) + " " + shapes + ": " + join(located, ", ", " and ") + rel,  // 1: everything
      join(located, ", ", " and "),                                              // 2: objects and places
      count_word(n) + " " + shapes + ": " + join(plain_a, ", ", " and "),        // 3: count and objects
      "a picture with " + join(kinds, ", ", " and "),                            // 4: shapes only
      "an image with " + count_word(n) + " " + shapes,                           // 5: count only
  };
}

nlohmann::json scene_ground_truth(const ShapesScene& scene) {
  nlohmann::json objects = nlohmann::json::array(), relations = nlohmann::json::array();
  for (const auto& o : scene.objects)
    objects.push_back(
        {{"color", shape_colors()[o.color]}, {"shape", shape_kinds()[o.kind]}, {"position", shape_cells()[o.cell]}});
  if (scene.objects.size() >= 2)
    relations.push_back({{"subject", 0}, {"relation", relation(scene.objects[0], scene.objects[1])}, {"object", 1}});
  return {{"prompt", scene_captions(scene)[1]},
          {"count", scene.objects.size()},
          {"objects", objects},
          {"relations", relations}};
}

}  // namespace dtrainer::data
