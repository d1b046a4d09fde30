#pragma once
// The embeddings the backbones share: sinusoidal timestep features (UNets, transformers and the
// [S2] control embedding), and fixed 2-D sin-cos positional embeddings (DiT / MAE style) with
// [S2]'s resolution transfer (transformers).

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "dtrainer/core/name_table.h"

namespace dtrainer::models {

// Sinusoidal features of width `dim` of each value of t [B] (any real dtype): [B, dim] fp32 on t's
// device, cos half first (diffusers' flip_sin_to_cos = True), freq_i = 10000^(-i / (dim / 2)).
torch::Tensor timestep_features(const torch::Tensor& t, int64_t dim);

enum class PosEmbedGrid {
  kResampled,     // [S2]: positions linspace(0, n / scale, n): the grid keeps its extent as n grows
  kExtrapolate,   // plain arange(n): new positions beyond the trained range
  kInterpolated,  // the base grid's table (round(n / scale) positions, arange) linearly interpolated to n
                  // positions, corners to corners (bilinear on the 2-D table: the embedding is separable)
};
const NameTable<PosEmbedGrid>& name_table(PosEmbedGrid);  // resampled | extrapolate | interpolated
PosEmbedGrid parse_pos_embed_grid(const std::string& field, const std::string& text);

// Embedding of an h x w token grid, [h * w, dim] in row-major token order (row outer).
// The first dim/2 channels encode the column, the last dim/2 the row; each half is
// [sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (dim/4)), k = 0..dim/4-1. dim % 4 == 0.
// `scale` = grid size / the grid size the model was trained at (1 at the training resolution).
torch::Tensor sincos_pos_embed_2d(int64_t dim, int64_t h, int64_t w, double scale = 1.0,
                                  PosEmbedGrid grid = PosEmbedGrid::kResampled);

// The 1-D positions the grid mode uses for n tokens at `scale`.
torch::Tensor pos_embed_positions(int64_t n, double scale, PosEmbedGrid grid);

}  // namespace dtrainer::models
