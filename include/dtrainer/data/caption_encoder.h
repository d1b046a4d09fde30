#pragma once
// Captions -> per-token states [L, D] through a release's CLIP text encoder(s) and tokenizer(s), as
// dtdata encode writes them into shards (data/encode_dataset.h) and as the alignment evaluation of
// such data encodes its prompts (train/alignment_eval.h): one implementation, so a prompt is encoded
// exactly as the training captions were.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/models/clip_text_model.h"
#include "dtrainer/models/clip_tokenizer.h"

namespace dtrainer::data {

struct CaptionEncoderConfig {
  std::vector<std::string> text_encoders;  // one or two transformers CLIP text folders (concatenated)
  std::vector<std::string> tokenizers;     // one per encoder
  std::string layer = "last";              // last | penultimate | penultimate-normed
  std::string dtype = "fp32";              // fp32 | bf16
};

class CaptionEncoder {
 public:
  // Loads every encoder and tokenizer (errors name the folder, file or tensor).
  explicit CaptionEncoder(const CaptionEncoderConfig& config);
  // Each caption's token states, start to end token, unpadded: [L, D] float32, L <= max_tokens().
  std::vector<torch::Tensor> encode(const std::vector<std::string>& captions, int64_t batch = 16);
  int64_t text_dim() const { return text_dim_; }
  int64_t max_tokens() const { return max_tokens_; }

 private:
  std::vector<models::CLIPTextModel> text_;
  std::vector<models::CLIPTokenizer> tokenizers_;
  models::CLIPTextLayer layer_ = models::CLIPTextLayer::kLast;
  int64_t text_dim_ = 0, max_tokens_ = 77;
};

}  // namespace dtrainer::data
