#pragma once
// Reading a training image of any format dtdata encode takes: PNG (libpng, data/png_image.h) or
// JPEG (libjpeg), told apart by their first bytes, not their names. [3, H, W] float32 in [-1, 1].
// A file that is neither, or that does not decode, is an Error naming it and the cause.

#include <string>

#include <torch/types.h>

namespace dtrainer::data {

torch::Tensor read_image(const std::string& path);
// Whether `path`'s name says it is an image dtdata encode reads (.png, .jpg, .jpeg; any case).
bool has_image_extension(const std::string& path);

}  // namespace dtrainer::data
