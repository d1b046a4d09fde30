#include "dtrainer/data/crop_scale.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"

namespace dtrainer::data {

CropBox draw_crop(uint64_t seed, int64_t batch, int64_t sample_id, int64_t height, int64_t width, double lo,
                  double hi) {
  if (!(lo > 0 && lo <= hi && hi <= 1))
    throw Error("crop_scale", "needs 0 < lo <= hi <= 1 (fractions of the image side), got [" + std::to_string(lo) +
                                  ", " + std::to_string(hi) + "]");
  StreamRng rng(stream_key(seed, RngPurpose::kCrop, static_cast<uint64_t>(batch), static_cast<uint64_t>(sample_id)));
  CropBox b;
  b.scale = lo + (hi - lo) * rng.uniform();
  const int64_t shorter = std::min(height, width);
  b.side = std::clamp<int64_t>(std::llround(b.scale * static_cast<double>(shorter)), 1, shorter);
  b.top = static_cast<int64_t>(rng.uniform() * static_cast<double>(height - b.side + 1));
  b.left = static_cast<int64_t>(rng.uniform() * static_cast<double>(width - b.side + 1));
  return b;
}

torch::Tensor crop_resize(const torch::Tensor& image, const CropBox& box, int64_t out) {
  namespace F = torch::nn::functional;
  const torch::Tensor crop = image.narrow(1, box.top, box.side).narrow(2, box.left, box.side);
  if (box.side == out) return crop.contiguous();
  return F::interpolate(crop.unsqueeze(0), F::InterpolateFuncOptions()
                                               .size(std::vector<int64_t>{out, out})
                                               .mode(torch::kBilinear)
                                               .align_corners(false)
                                               .antialias(box.side > out))
      .squeeze(0);
}

}  // namespace dtrainer::data
