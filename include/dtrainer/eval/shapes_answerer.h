#pragma once
// The programmatic answerer of the shapes world: a deterministic detector that reads, per cell of
// the 2x2 grid, whether a shape is there, its colour (nearest of the six saturated colours) and
// its kind (the best overlap with the world's own renderings of a circle, a square and a triangle
// in that cell, allowing a small shift), and answers the structured questions of
// eval/questions.h from that. It works at any even image size (the dataset is made at 16, 32 and
// 64 px). Its accuracy is measured, not assumed: tests/eval/test_shapes_answerer.cpp (real
// renderings, noise, blur), docs/EVAL.md.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/eval/questions.h"

namespace dtrainer::eval {

struct CellDetection {
  bool present = false;
  int64_t color = -1, shape = -1;  // indices into data::shape_colors() / shape_kinds(); -1 when absent
  double ink = 0;                  // mean ink of the cell (0: black, 1: fully saturated)
  double overlap = 0;              // intersection over union of the best-matching shape template
};

struct SceneDetection {
  std::vector<CellDetection> cells;  // 4, in data::shape_cells() order
  int64_t count() const;
};

// image: [3, H, W] float in [-1, 1] (H = W, even), as the trainer samples and the dataset renders.
SceneDetection detect_shapes(const torch::Tensor& image);

// The answer the detection gives to `q` (one of q.choices, or "none" where nothing matches).
std::string answer_question(const Question& q, const SceneDetection& d);

}  // namespace dtrainer::eval
