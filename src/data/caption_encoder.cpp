#include "dtrainer/data/caption_encoder.h"

#include <algorithm>

#include <torch/torch.h>

#include "dtrainer/core/error.h"

namespace dtrainer::data {

CaptionEncoder::CaptionEncoder(const CaptionEncoderConfig& c) {
  if (c.text_encoders.empty() || c.text_encoders.size() != c.tokenizers.size())
    throw Error("text encoder", "needs one tokenizer per text encoder");
  if (c.dtype != "fp32" && c.dtype != "bf16") throw Error("dtype", "expected fp32 or bf16, got '" + c.dtype + "'");
  const torch::ScalarType dt = c.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
  for (size_t k = 0; k < c.text_encoders.size(); ++k) {
    text_.push_back(models::load_clip_text_model(c.text_encoders[k], dt));
    tokenizers_.push_back(models::CLIPTokenizer::from_folder(c.tokenizers[k]));
    const auto& m = text_.back()->config();
    text_dim_ += m.hidden_size;
    max_tokens_ = std::min(max_tokens_, m.max_position_embeddings);
    if (tokenizers_.back().vocab_size() > m.vocab_size)
      throw Error(c.tokenizers[k], "has " + std::to_string(tokenizers_.back().vocab_size()) +
                                       " tokens, more than the text encoder's vocabulary (" +
                                       std::to_string(m.vocab_size) + ", " + c.text_encoders[k] + ")");
  }
  layer_ = models::parse_clip_text_layer("--text-layer", c.layer);
}

std::vector<torch::Tensor> CaptionEncoder::encode(const std::vector<std::string>& captions, int64_t batch) {
  torch::NoGradGuard no_grad;
  std::vector<std::vector<int64_t>> ids;
  for (const auto& caption : captions) {
    std::vector<int64_t> first = tokenizers_[0].encode(caption, max_tokens_);
    for (size_t k = 1; k < tokenizers_.size(); ++k)
      if (tokenizers_[k].encode(caption, max_tokens_) != first)
        throw Error("--tokenizer-2", "tokenizes \"" + caption.substr(0, 60) +
                                         "\" differently from the first tokenizer (the encoders' token states "
                                         "cannot be concatenated)");
    ids.push_back(std::move(first));
  }
  const size_t step = static_cast<size_t>(std::max<int64_t>(1, batch));
  std::vector<torch::Tensor> out(captions.size());
  for (size_t start = 0; start < ids.size(); start += step) {
    const size_t stop = std::min(ids.size(), start + step);
    int64_t T = 0;
    for (size_t i = start; i < stop; ++i) T = std::max<int64_t>(T, static_cast<int64_t>(ids[i].size()));
    torch::Tensor padded = torch::zeros({static_cast<int64_t>(stop - start), T}, torch::kLong);
    for (size_t i = start; i < stop; ++i)  // (padding after the end token: the causal mask keeps it out)
      padded[static_cast<int64_t>(i - start)]
          .narrow(0, 0, static_cast<int64_t>(ids[i].size()))
          .copy_(torch::tensor(ids[i], torch::kLong));
    std::vector<torch::Tensor> parts;
    for (auto& m : text_) parts.push_back(m->forward(padded, layer_).hidden.to(torch::kFloat32));
    const torch::Tensor states = torch::cat(parts, 2);
    for (size_t i = start; i < stop; ++i)
      out[i] = states[static_cast<int64_t>(i - start)].narrow(0, 0, static_cast<int64_t>(ids[i].size())).clone();
  }
  return out;
}

}  // namespace dtrainer::data
