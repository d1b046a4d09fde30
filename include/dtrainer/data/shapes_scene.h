#pragma once
// Scenes of the synthetic compositional dataset: 1-4 coloured shapes, each in its own cell of a
// 2x2 grid, rendered as small RGB images in [-1, 1], with one short original caption and five
// longer synthetic captions ranked best first (the caption-density axis of [S1] §4), and a
// structured ground truth that an alignment benchmark can score generated images against.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace dtrainer {
class StreamRng;
}

namespace dtrainer::data {

const std::vector<std::string>& shape_colors();  // red, green, blue, yellow, magenta, cyan
const std::vector<std::string>& shape_kinds();   // circle, square, triangle
const std::vector<std::string>& shape_cells();   // top left, top right, bottom left, bottom right
// RGB in [-1, 1] of colour c.
std::vector<float> shape_color_rgb(int64_t color);

struct ShapeObject {
  int64_t color = 0;  // index into shape_colors()
  int64_t kind = 0;   // index into shape_kinds()
  int64_t cell = 0;   // index into shape_cells(): column = cell % 2, row = cell / 2
};

struct ShapesScene {
  std::vector<ShapeObject> objects;  // 1-4, distinct cells
};

ShapesScene random_scene(StreamRng& rng);
// [3, size, size] float32 in [-1, 1]: black background, each shape filling most of its cell.
torch::Tensor render_scene(const ShapesScene& scene, int64_t size);
// captions[0] is the short original caption; captions[1..5] synthetic, most informative first.
std::vector<std::string> scene_captions(const ShapesScene& scene);
// {"prompt", "count", "objects": [{"color", "shape", "position"}], "relations": [...]}
nlohmann::json scene_ground_truth(const ShapesScene& scene);

}  // namespace dtrainer::data
