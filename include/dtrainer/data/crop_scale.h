#pragma once
// [S2]'s crop-scale pre-training: at low resolution, train on square crops whose side is a fraction
// of the image side (global [0.9, 1.0], local [0.4, 0.6], mixed [0.4, 1.0]; local transfers best to
// a later high-resolution stage), resized to the training size. Taken on the fly from pixel-space
// data (the loader); latent data is cropped when it is encoded. Each crop is keyed by (seed, batch,
// sample id), so it is the same on any number of ranks, and its offsets enter the controls.

#include <cstdint>

#include <torch/types.h>

namespace dtrainer::data {

struct CropBox {
  int64_t top = 0, left = 0, side = 0;  // in the stored image's pixels
  double scale = 1;                     // the fraction of the shorter side drawn, in [lo, hi]
};

// The crop of sample `sample_id` in global batch `batch` for an image of height x width: scale
// uniform in [lo, hi], side = round(scale * min(height, width)) (at least 1), top and left uniform
// over the positions that keep it inside. Throws Error("crop_scale") unless 0 < lo <= hi <= 1.
CropBox draw_crop(uint64_t seed, int64_t batch, int64_t sample_id, int64_t height, int64_t width, double lo, double hi);

// image [C, H, W] float: the box, resized to out x out (bilinear, antialiased when shrinking).
torch::Tensor crop_resize(const torch::Tensor& image, const CropBox& box, int64_t out);

}  // namespace dtrainer::data
