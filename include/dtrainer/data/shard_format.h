#pragma once
// Shard format v1 — see data/README.md for the full specification a third-party writer needs.
// One HDF5 file holds N images: latents [N, C, H, W], K_i >= 1 captions per image (caption 0 the
// original, then synthetic captions ranked best first) with ragged token embeddings, and metadata.

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "dtrainer/core/name_table.h"

namespace dtrainer::data {

constexpr int64_t kShardSchemaVersion = 1;
constexpr const char* kShardExtension = ".h5";

enum class ElementType { kFloat32, kFloat16, kBFloat16 };
const NameTable<ElementType>& name_table(ElementType);  // float32 (fp32) | float16 (fp16) | bfloat16 (bf16)
const char* to_string(ElementType t);
ElementType parse_element_type(const std::string& field, const std::string& text);
int64_t element_bytes(ElementType t);
torch::ScalarType torch_dtype(ElementType t);

// File-level attributes.
struct ShardHeader {
  int64_t schema_version = kShardSchemaVersion;
  std::string latent_space = "sdxl-vae";  // "pixels" for pixel-space data
  std::string latent_encoder = "";        // e.g. "stabilityai/sdxl-vae"; free text
  std::string text_encoder = "";          // e.g. "openclip-vit-h-14", "dtrainer-toy-v1"
  int64_t text_dim = 1024;                // D
  int64_t max_tokens = 77;                // T_max: no caption is longer
};

}  // namespace dtrainer::data
