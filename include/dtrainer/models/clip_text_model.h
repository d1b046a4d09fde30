#pragma once
// CLIPTextModel — the text transformer of CLIP (Radford et al. 2021) as the papers condition on it:
// OpenAI CLIP ViT-L/14 ([S2]; SD 1.x), OpenCLIP ViT-H/14 ([S1]; SD 2.x, width 1024) and SDXL's pair
// (ViT-L + OpenCLIP ViT-bigG/14, their penultimate layers concatenated to 2048).
//
// Token and position embeddings, pre-LayerNorm blocks (causal self-attention, MLP with quick-GELU for
// OpenAI's models or GELU for OpenCLIP's), a final LayerNorm, and — for CLIPTextModelWithProjection
// (SDXL's second encoder) — the pooled projection of the end token. Parameter names are Hugging Face
// transformers' ("text_model.encoder.layers.0.self_attn.q_proj.weight"), so a release's
// `model.safetensors` loads as it is.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "dtrainer/core/name_table.h"

namespace dtrainer::models {

// config.json of a Hugging Face CLIPTextConfig (what the architecture needs).
struct CLIPTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 512;
  int64_t intermediate_size = 2048;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 8;
  int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // quick_gelu (OpenAI) | gelu (OpenCLIP)
  double layer_norm_eps = 1e-5;
  int64_t projection_dim = 0;  // > 0: CLIPTextModelWithProjection's text_projection [projection_dim, hidden]
  int64_t eos_token_id = 49407;

  // Throws dtrainer::Error("<where>.<field>", ...).
  void validate(const std::string& where) const;
};

// Parses config.json; `with_projection` when its architectures name CLIPTextModelWithProjection.
CLIPTextConfig parse_clip_text_config(const std::string& path);
// The released text towers: "clip-vit-l-14" (OpenAI; 123.06 M), "open-clip-vit-h-14" (1024 wide,
// 24 layers), "open-clip-vit-bigg-14" (1280 wide, 32 layers, with its 1280 projection; 694.66 M).
CLIPTextConfig clip_text_preset(const std::string& name);

// Which hidden states the diffusion model reads, per token.
enum class CLIPTextLayer {
  kLast,               // the last block's output through final_layer_norm (SD 1.x: CLIP-L)
  kPenultimate,        // the second-to-last block's output, no final norm (SDXL, both encoders)
  kPenultimateNormed,  // the second-to-last block's output through final_layer_norm (SD 2.x: OpenCLIP-H)
};
const NameTable<CLIPTextLayer>& name_table(CLIPTextLayer);  // last | penultimate | penultimate-normed
CLIPTextLayer parse_clip_text_layer(const std::string& field, const std::string& text);
const char* to_string(CLIPTextLayer layer);

struct CLIPTextOutput {
  torch::Tensor hidden;  // [B, T, hidden_size]: the chosen layer's states of every token
  torch::Tensor pooled;  // [B, projection_dim] (projected end token; a model with a projection only)
};

class CLIPTextModelImpl : public torch::nn::Module {
 public:
  explicit CLIPTextModelImpl(const CLIPTextConfig& config);
  // ids [B, T] int64 (T <= max_position_embeddings), each row starting with the start token; rows
  // may be padded after their end token (the causal mask keeps padding out of every real token's
  // state). Bad ids are an Error naming them.
  CLIPTextOutput forward(const torch::Tensor& ids, CLIPTextLayer layer = CLIPTextLayer::kLast);
  const CLIPTextConfig& config() const { return config_; }

 private:
  struct Block;
  CLIPTextConfig config_;
  torch::Tensor token_embedding_, position_embedding_, final_norm_weight_, final_norm_bias_, projection_;
  std::vector<std::shared_ptr<Block>> blocks_;
};
TORCH_MODULE(CLIPTextModel);

// Builds the text model of a Hugging Face folder (config.json + model.safetensors, e.g. an SD
// release's text_encoder/ or SDXL's text_encoder_2/) and loads it by name, in `dtype`. A whole-CLIP
// file (vision tower and logit scale included) loads too: the vision tensors are skipped.
CLIPTextModel load_clip_text_model(const std::string& dir, torch::ScalarType dtype = torch::kFloat32);

}  // namespace dtrainer::models
