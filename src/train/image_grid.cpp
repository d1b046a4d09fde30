#include "dtrainer/train/image_grid.h"

#include <png.h>

#include <cstdio>
#include <filesystem>
#include <vector>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/temp_files.h"

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
  const torch::Tensor px = ((big.detach().to(torch::kFloat32).clamp(-1, 1) + 1) * 127.5).round().to(torch::kUInt8).permute({0, 2, 3, 1}).contiguous();
  std::vector<uint8_t> canvas(static_cast<size_t>(W * H * 3), 255);
  const uint8_t* src = px.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r0 = pad + (i / cols) * (h + pad), c0 = pad + (i % cols) * (w + pad);
    for (int64_t y = 0; y < h; ++y)
      std::copy_n(src + (i * h + y) * w * 3, w * 3, canvas.begin() + ((r0 + y) * W + c0) * 3);
  }
  const std::string tmp = temporary_path(path).string();
  const TempFileGuard guard(tmp);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path, "cannot create " + tmp + ": " + errno_message(errno));
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    throw Error(path, "cannot write the image: " + errno_message(errno));
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(W), static_cast<png_uint_32>(H), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t y = 0; y < H; ++y) png_write_row(png, canvas.data() + y * W * 3);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  const bool flushed = std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  if (std::fclose(f) != 0 || !flushed) throw Error(path, "cannot write: " + errno_message(errno));
  publish_file(tmp, path);
  guard.release();
}

}  // namespace dtrainer::train
