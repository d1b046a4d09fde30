#pragma once
// A frozen toy text encoder that stands in for OpenCLIP on the synthetic datasets: words are
// looked up in a deterministic pseudo-random token table (a fixed function of the word and the
// seed) and get a sin-cos position signal, giving [L, D] token embeddings with <start>/<end>
// tokens like CLIP's. It is not a language model — it gives each word a stable identity and
// each position a stable signature, which is what a small diffusion model needs to learn
// colour / shape / count / position words.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace dtrainer::data {

class ToyTextEncoder {
 public:
  explicit ToyTextEncoder(int64_t dim = 1024, int64_t max_tokens = 77, uint64_t seed = 0x746f79);
  // v2: the token table no longer depends on the dataset's seed (v1 encoded a run's held-out
  // set, synthesized with another seed, with another table than its training set).
  static const char* name() { return "dtrainer-toy-text-v2"; }
  int64_t dim() const { return dim_; }
  int64_t max_tokens() const { return max_tokens_; }
  // Lower-cased words and punctuation marks, between "<start>" and "<end>", cut to max_tokens
  // (the last token is always "<end>").
  std::vector<std::string> tokenize(const std::string& text) const;
  // [L, D] float32 embeddings of tokenize(text). The empty prompt gives the 2-token null text.
  torch::Tensor encode(const std::string& text) const;
  // Number of nouns, counted against the toy vocabulary (shape words, "shape(s)", "image", ...).
  static int64_t count_nouns(const std::string& text);

 private:
  int64_t dim_, max_tokens_;
  uint64_t seed_;
};

}  // namespace dtrainer::data
