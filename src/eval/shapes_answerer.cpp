#include "dtrainer/eval/shapes_answerer.h"

#include <algorithm>
#include <map>
#include <mutex>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/data/shapes_scene.h"

namespace dtrainer::eval {
namespace {

constexpr float kInkThreshold = 0.5f;  // a pixel is ink when its brightest channel is above the middle

// ink = brightest channel mapped from [-1, 1] to [0, 1].
torch::Tensor ink_of(const torch::Tensor& image) { return ((image.amax(0) + 1) / 2).clamp(0, 1); }

// The world's own rendering of each kind in each cell at `size`, as boolean masks [size, size],
// cached per size (the detector compares with exactly what the dataset draws).
struct Templates {
  std::vector<std::vector<torch::Tensor>> mask;  // [cell][kind]
  double min_area = 1;                           // smallest template's share of its cell
};

const Templates& templates(int64_t size) {
  static std::mutex m;
  static std::map<int64_t, Templates> cache;
  std::lock_guard<std::mutex> lock(m);
  auto it = cache.find(size);
  if (it != cache.end()) return it->second;
  Templates t;
  const double cell_area = static_cast<double>(size * size) / 4.0;
  for (int64_t c = 0; c < 4; ++c) {
    t.mask.emplace_back();
    for (int64_t k = 0; k < 3; ++k) {
      data::ShapesScene s;
      s.objects.push_back({0, k, c});
      const torch::Tensor mask = ink_of(data::render_scene(s, size)) > kInkThreshold;
      t.min_area = std::min(t.min_area, mask.sum().item<double>() / cell_area);
      t.mask.back().push_back(mask);
    }
  }
  return cache.emplace(size, std::move(t)).first->second;
}

double iou(const torch::Tensor& a, const torch::Tensor& b) {
  const double inter = (a & b).sum().item<double>(), uni = (a | b).sum().item<double>();
  return uni > 0 ? inter / uni : 0;
}

// `mask` shifted by (dy, dx), zero-filled.
torch::Tensor shifted(const torch::Tensor& mask, int64_t dy, int64_t dx) {
  if (dy == 0 && dx == 0) return mask;
  torch::Tensor out = torch::zeros_like(mask);
  const int64_t H = mask.size(0), W = mask.size(1);
  const int64_t y0 = std::max<int64_t>(0, dy), y1 = std::min(H, H + dy), x0 = std::max<int64_t>(0, dx),
                x1 = std::min(W, W + dx);
  if (y1 <= y0 || x1 <= x0) return out;
  out.slice(0, y0, y1).slice(1, x0, x1).copy_(mask.slice(0, y0 - dy, y1 - dy).slice(1, x0 - dx, x1 - dx));
  return out;
}

// The world's rule for the relation of two cells (data/shapes_scene.cpp): columns first.
std::string relation_of(int64_t a, int64_t b) {
  if (a % 2 != b % 2) return a % 2 < b % 2 ? "left of" : "right of";
  return a / 2 < b / 2 ? "above" : "below";
}

}  // namespace

int64_t SceneDetection::count() const {
  return std::count_if(cells.begin(), cells.end(), [](const CellDetection& c) { return c.present; });
}

SceneDetection detect_shapes(const torch::Tensor& image_in) {
  if (image_in.dim() != 3 || image_in.size(0) != 3 || image_in.size(1) != image_in.size(2) ||
      image_in.size(1) % 2 != 0 || image_in.size(1) < 8)
    throw Error("detect_shapes", "wants an RGB image [3, S, S] with an even S >= 8, got " + c10::str(image_in.sizes()));
  const torch::Tensor image = image_in.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t size = image.size(1), half = size / 2;
  const Templates& t = templates(size);
  const torch::Tensor ink = ink_of(image);
  const torch::Tensor inked = ink > kInkThreshold;
  const int64_t shift = std::max<int64_t>(1, size / 32);
  SceneDetection d;
  for (int64_t c = 0; c < 4; ++c) {
    const int64_t y = (c / 2) * half, x = (c % 2) * half;
    CellDetection cell;
    cell.ink = ink.slice(0, y, y + half).slice(1, x, x + half).mean().item<double>();
    // Present when the inked share of the cell reaches 40% of the smallest shape the world draws.
    const torch::Tensor cell_mask = torch::zeros_like(inked);
    cell_mask.slice(0, y, y + half).slice(1, x, x + half).copy_(inked.slice(0, y, y + half).slice(1, x, x + half));
    const double inked_share = cell_mask.sum().item<double>() / static_cast<double>(half * half);
    cell.present = inked_share >= 0.4 * t.min_area;
    if (cell.present) {
      // Colour: the mean of the inked pixels, nearest of the six (their RGB corners in [-1, 1]).
      const torch::Tensor sel = cell_mask.flatten();
      const torch::Tensor rgb = image.reshape({3, -1}).index({torch::indexing::Slice(), sel}).mean(1);
      double best = 1e30;
      for (int64_t k = 0; k < static_cast<int64_t>(data::shape_colors().size()); ++k) {
        const auto p = data::shape_color_rgb(k);
        double dist = 0;
        for (int ch = 0; ch < 3; ++ch) dist += (rgb[ch].item<double>() - p[ch]) * (rgb[ch].item<double>() - p[ch]);
        if (dist < best) best = dist, cell.color = k;
      }
      // Kind: the best intersection over union with the world's templates, shifted a little.
      for (int64_t k = 0; k < 3; ++k)
        for (int64_t dy = -shift; dy <= shift; ++dy)
          for (int64_t dx = -shift; dx <= shift; ++dx) {
            const double o = iou(cell_mask, shifted(t.mask[c][k], dy, dx));
            if (o > cell.overlap) cell.overlap = o, cell.shape = k;
          }
    }
    d.cells.push_back(cell);
  }
  return d;
}

std::string answer_question(const Question& q, const SceneDetection& d) {
  const auto& colors = data::shape_colors();
  const auto& kinds = data::shape_kinds();
  const auto& cells = data::shape_cells();
  auto find = [&](int64_t color, int64_t shape) -> int64_t {
    for (int64_t c = 0; c < 4; ++c)
      if (d.cells[c].present && d.cells[c].color == color && d.cells[c].shape == shape) return c;
    return -1;
  };
  const Query& k = q.query;
  switch (k.kind) {
    case Query::Kind::kHasObject: return find(k.color, k.shape) >= 0 ? "yes" : "no";
    case Query::Kind::kHasAnyAt: return d.cells.at(k.cell).present ? "yes" : "no";
    case Query::Kind::kShapeAt: return d.cells.at(k.cell).present ? kinds[d.cells[k.cell].shape] : "none";
    case Query::Kind::kColorAt: return d.cells.at(k.cell).present ? colors[d.cells[k.cell].color] : "none";
    case Query::Kind::kWhere: {
      const int64_t c = find(k.color, k.shape);
      return c >= 0 ? cells[c] : "none";
    }
    case Query::Kind::kCount: {
      static const char* words[] = {"zero", "one", "two", "three", "four"};
      return words[d.count()];
    }
    case Query::Kind::kRelation: {
      const int64_t a = find(k.color, k.shape), b = find(k.color2, k.shape2);
      if (a < 0 || b < 0 || a == b) return "no";
      return relation_of(a, b) == k.relation ? "yes" : "no";
    }
  }
  return "none";
}

}  // namespace dtrainer::eval
