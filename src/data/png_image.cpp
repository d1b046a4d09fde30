#include "dtrainer/data/png_image.h"

#include <png.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <vector>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/temp_files.h"

namespace dtrainer::data {

void write_png_pixels(const std::string& path, const uint8_t* rgb, int64_t width, int64_t height) {
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
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t y = 0; y < height; ++y) png_write_row(png, rgb + y * width * 3);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  const bool flushed = std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  if (std::fclose(f) != 0 || !flushed) throw Error(path, "cannot write: " + errno_message(errno));
  publish_file(tmp, path);
  guard.release();
}

void write_png(const std::string& path, const torch::Tensor& image) {
  if (image.dim() != 3 || image.size(0) != 3)
    throw Error(path, "a PNG image needs [3, H, W], got " + c10::str(image.sizes()));
  const torch::Tensor px = ((image.detach().to(torch::kCPU, torch::kFloat32).clamp(-1, 1) + 1) * 127.5)
                               .round()
                               .to(torch::kUInt8)
                               .permute({1, 2, 0})
                               .contiguous();
  write_png_pixels(path, px.data_ptr<uint8_t>(), image.size(2), image.size(1));
}

torch::Tensor read_png(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(path, "cannot open: " + errno_message(errno));
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  std::vector<uint8_t> pixels;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::fclose(f);
    throw Error(path, "not a readable PNG image (corrupt or truncated?)");
  }
  png_init_io(png, f);
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  const int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  if (depth != 8 || (type != PNG_COLOR_TYPE_RGB && type != PNG_COLOR_TYPE_RGBA && type != PNG_COLOR_TYPE_GRAY)) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::fclose(f);
    throw Error(path, "only 8-bit RGB, RGBA or grey PNGs are read");
  }
  if (type == PNG_COLOR_TYPE_RGBA) png_set_strip_alpha(png);
  if (type == PNG_COLOR_TYPE_GRAY) png_set_gray_to_rgb(png);
  png_read_update_info(png, info);
  pixels.resize(static_cast<size_t>(w) * h * 3);
  for (png_uint_32 y = 0; y < h; ++y) png_read_row(png, pixels.data() + static_cast<size_t>(y) * w * 3, nullptr);
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(f);
  const torch::Tensor hwc =
      torch::from_blob(pixels.data(), {static_cast<int64_t>(h), static_cast<int64_t>(w), 3}, torch::kUInt8);
  return hwc.permute({2, 0, 1}).to(torch::kFloat32).div(127.5).sub(1).contiguous();
}

}  // namespace dtrainer::data
