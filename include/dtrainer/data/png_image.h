#pragma once
// RGB images as lossless 8-bit PNG files (libpng): [3, H, W] float in [-1, 1] <-> pixels
// round((x + 1) * 127.5). Written atomically (FILE.tmp-PID, renamed when complete); every
// failure is an Error naming the file and the cause.

#include <cstdint>
#include <string>

#include <torch/types.h>

namespace dtrainer::data {

void write_png(const std::string& path, const torch::Tensor& image);
// HWC uint8 pixels (height x width x 3), as written.
void write_png_pixels(const std::string& path, const uint8_t* rgb, int64_t width, int64_t height);
// [3, H, W] float32 in [-1, 1]. Throws Error for a file that is not an 8-bit RGB(A) or grey PNG.
torch::Tensor read_png(const std::string& path);

}  // namespace dtrainer::data
