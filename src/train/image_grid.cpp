#include "dtrainer/train/image_grid.h"

#include <cstdio>
#include <filesystem>
#include <vector>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/data/png_image.h"

namespace dtrainer::train {

void write_png_grid(const std::string& path, const torch::Tensor& images, int64_t columns) {
  if (images.dim() != 4 || images.size(1) != 3) throw Error(path, "a PNG grid needs [N, 3, H, W] images");
  // Small images (synthetic data: 16-32 px) are enlarged by pixel repetition to >= 64 px tiles.
  const int64_t zoom = std::max<int64_t>(1, 64 / std::max(images.size(2), images.size(3)));
  const torch::Tensor big = zoom > 1 ? images.repeat_interleave(zoom, 2).repeat_interleave(zoom, 3) : images;
  const int64_t n = big.size(0), h = big.size(2), w = big.size(3);
  const int64_t cols = std::max<int64_t>(1, std::min(columns, n));
  const int64_t rows = (n + cols - 1) / cols;
  const int64_t pad = 2, W = cols * (w + pad) + pad, H = rows * (h + pad) + pad;
  // [-1, 1] -> [0, 255], HWC
  const torch::Tensor px = ((big.detach().to(torch::kFloat32).clamp(-1, 1) + 1) * 127.5)
                               .round()
                               .to(torch::kUInt8)
                               .permute({0, 2, 3, 1})
                               .contiguous();
  std::vector<uint8_t> canvas(static_cast<size_t>(W * H * 3), 255);
  const uint8_t* src = px.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r0 = pad + (i / cols) * (h + pad), c0 = pad + (i % cols) * (w + pad);
    for (int64_t y = 0; y < h; ++y)
      std::copy_n(src + (i * h + y) * w * 3, w * 3, canvas.begin() + ((r0 + y) * W + c0) * 3);
  }
  data::write_png_pixels(path, canvas.data(), W, H);
}

}  // namespace dtrainer::train
