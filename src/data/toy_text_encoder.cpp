#include "dtrainer/data/toy_text_encoder.h"

#include <cctype>
#include <cmath>
#include <set>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"

namespace dtrainer::data {

ToyTextEncoder::ToyTextEncoder(int64_t dim, int64_t max_tokens, uint64_t seed)
    : dim_(dim), max_tokens_(max_tokens), seed_(seed) {
  if (dim < 2 || dim % 2) throw Error("text_dim", "the toy encoder needs an even width >= 2");
  if (max_tokens < 2) throw Error("max_tokens", "must hold at least <start> and <end>");
}

std::vector<std::string> ToyTextEncoder::tokenize(const std::string& text) const {
  std::vector<std::string> out{"<start>"};
  std::string word;
  auto flush = [&] {
    if (!word.empty()) out.push_back(word);
    word.clear();
  };
  for (unsigned char c : text) {
    if (std::isalnum(c))
      word += static_cast<char>(std::tolower(c));
    else {
      flush();
      if (std::ispunct(c)) out.push_back(std::string(1, static_cast<char>(c)));
    }
  }
  flush();
  if (static_cast<int64_t>(out.size()) > max_tokens_ - 1) out.resize(max_tokens_ - 1);
  out.push_back("<end>");
  return out;
}

static uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

torch::Tensor ToyTextEncoder::encode(const std::string& text) const {
  const std::vector<std::string> toks = tokenize(text);
  const int64_t L = static_cast<int64_t>(toks.size());
  std::vector<float> data(L * dim_);
  std::vector<double> freq(dim_);
  for (int64_t d = 0; d < dim_; ++d) freq[d] = std::pow(10000.0, -static_cast<double>(d / 2 * 2) / dim_);
  for (int64_t p = 0; p < L; ++p) {
    StreamRng word(stream_key(seed_, RngPurpose::kSynthesis, fnv1a(toks[p]), 0));
    for (int64_t d = 0; d < dim_; ++d) {
      // token identity ~ N(0, 1) plus a sin-cos position signal of amplitude 0.5
      const double pos = (d % 2 == 0) ? std::sin(p * freq[d]) : std::cos(p * freq[d]);
      data[p * dim_ + d] = static_cast<float>(word.normal() + 0.5 * pos);
    }
  }
  return torch::from_blob(data.data(), {L, dim_}, torch::kFloat32).clone();
}

int64_t ToyTextEncoder::count_nouns(const std::string& text) {
  static const std::set<std::string> nouns = {"circle", "circles", "square", "squares", "triangle", "triangles",
                                              "shape",  "shapes",  "image",  "picture", "object",   "objects"};
  int64_t n = 0;
  std::string word;
  for (size_t i = 0; i <= text.size(); ++i) {
    const unsigned char c = i < text.size() ? text[i] : ' ';
    if (std::isalnum(c))
      word += static_cast<char>(std::tolower(c));
    else {
      if (nouns.count(word)) ++n;
      word.clear();
    }
  }
  return n;
}

}  // namespace dtrainer::data
