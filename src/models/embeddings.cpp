#include "dtrainer/models/embeddings.h"

#include <cmath>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/parse.h"

namespace dtrainer::models {

torch::Tensor timestep_features(const torch::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(t.device());
  // freq_i = 10000^(-i/half), i = 0..half-1
  const torch::Tensor freqs = torch::exp(torch::arange(half, opts) * (-std::log(10000.0) / half));
  const torch::Tensor args = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);
  return torch::cat({torch::cos(args), torch::sin(args)}, 1);
}

const NameTable<PosEmbedGrid>& name_table(PosEmbedGrid) {
  static const NameTable<PosEmbedGrid> t{{"resampled", PosEmbedGrid::kResampled},
                                         {"extrapolate", PosEmbedGrid::kExtrapolate},
                                         {"interpolated", PosEmbedGrid::kInterpolated}};
  return t;
}
PosEmbedGrid parse_pos_embed_grid(const std::string& field, const std::string& text) {
  return name_table(PosEmbedGrid{}).parse(field, text);
}

torch::Tensor pos_embed_positions(int64_t n, double scale, PosEmbedGrid grid) {
  if (grid == PosEmbedGrid::kExtrapolate) return torch::arange(n, torch::kFloat64);
  if (grid == PosEmbedGrid::kInterpolated) {  // where each of the n positions falls on the base grid's table
    const int64_t base = std::max<int64_t>(1, std::llround(static_cast<double>(n) / scale));
    if (n == 1) return torch::zeros({1}, torch::kFloat64);
    return torch::linspace(0.0, static_cast<double>(base - 1), n, torch::kFloat64);
  }
  return torch::linspace(0.0, static_cast<double>(n) / scale, n, torch::kFloat64);  // [S2] same extent
}

static torch::Tensor embed_1d(int64_t dim, const torch::Tensor& pos) {
  const torch::Tensor k = torch::arange(dim / 2, torch::kFloat64) / (dim / 2.0);
  const torch::Tensor omega = torch::pow(10000.0, -k);               // [dim/2]
  const torch::Tensor args = pos.unsqueeze(1) * omega.unsqueeze(0);  // [n, dim/2]
  return torch::cat({torch::sin(args), torch::cos(args)}, 1);
}

// The table at the integer positions 0..ceil(max pos), read at fractional `pos` by linear
// interpolation between neighbouring rows (what bilinear interpolation of the 2-D table does to
// each separable half).
static torch::Tensor interpolate_1d(int64_t dim, const torch::Tensor& pos) {
  const int64_t last = static_cast<int64_t>(std::ceil(pos.max().item<double>()));
  const torch::Tensor table = embed_1d(dim, torch::arange(last + 1, torch::kFloat64));  // [last + 1, dim]
  const torch::Tensor lo = pos.floor().clamp_max(static_cast<double>(last)).to(torch::kInt64);
  const torch::Tensor hi = (lo + 1).clamp_max(last);
  const torch::Tensor frac = (pos - lo.to(torch::kFloat64)).unsqueeze(1);
  return table.index_select(0, lo) * (1 - frac) + table.index_select(0, hi) * frac;
}

torch::Tensor sincos_pos_embed_2d(int64_t dim, int64_t h, int64_t w, double scale, PosEmbedGrid grid) {
  if (dim < 4 || dim % 4 != 0)
    throw Error("pos_embed.dim", "must be a positive multiple of 4, got " + std::to_string(dim));
  if (h < 1 || w < 1) throw Error("pos_embed.grid", "needs at least one row and column");
  if (!(scale > 0)) throw Error("pos_embed.scale", "must be positive");
  const torch::Tensor rows = pos_embed_positions(h, scale, grid), cols = pos_embed_positions(w, scale, grid);
  const bool table = grid == PosEmbedGrid::kInterpolated;
  const torch::Tensor col_emb = table ? interpolate_1d(dim / 2, cols) : embed_1d(dim / 2, cols);  // [w, dim/2]
  const torch::Tensor row_emb = table ? interpolate_1d(dim / 2, rows) : embed_1d(dim / 2, rows);  // [h, dim/2]
  const torch::Tensor c = col_emb.unsqueeze(0).expand({h, w, dim / 2});
  const torch::Tensor r = row_emb.unsqueeze(1).expand({h, w, dim / 2});
  return torch::cat({c, r}, 2).reshape({h * w, dim}).to(torch::kFloat32);
}

}  // namespace dtrainer::models
