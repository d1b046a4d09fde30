#pragma once
// Sample grids: images [N, 3, H, W] in [-1, 1] (pixel-space data) written as one PNG of `columns`
// tiles per row, small images enlarged (pixel repetition) to tiles of at least 64 px; latent
// samples are saved as a tensor file instead.

#include <cstdint>
#include <string>

#include <torch/types.h>

namespace dtrainer::train {

// Writes atomically (temporary name, then rename). Throws Error naming the path.
void write_png_grid(const std::string& path, const torch::Tensor& images, int64_t columns);

}  // namespace dtrainer::train
