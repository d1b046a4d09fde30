#pragma once
// CLIPTokenizer — CLIP's byte-level BPE tokenizer, read from a release's `vocab.json` and
// `merges.txt` (the `tokenizer/` folder of an SD / SDXL release).
//
// A caption becomes ids as CLIP's tokenizer makes them:
//   1. Unicode NFC normalisation, every run of whitespace one space, trimmed, lower-cased;
//   2. split by CLIP's pattern: the special tokens, the English contractions 's 't 're 've 'm 'll 'd,
//      runs of letters, single digits, runs of other non-space characters;
//   3. each piece's UTF-8 bytes mapped to printable characters (GPT-2's byte-to-unicode table), the
//      last one marked "</w>", and merged pair by pair, lowest merge rank first;
//   4. the start token, at most max_length - 2 pieces' ids, the end token.
// Unlike OpenAI's reference (and transformers' slow CLIPTokenizer when the ftfy package is present),
// no ftfy repairs and no HTML-entity unescaping are applied: captions with mojibake or "&amp;" keep
// them as written, as transformers' fast tokenizer does. docs/DATA.md says more.

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dtrainer::models {

class CLIPTokenizer {
 public:
  // Reads the two files (errors name the file and the line or entry).
  CLIPTokenizer(const std::string& vocab_json, const std::string& merges_txt);
  // A tokenizer folder: vocab.json and merges.txt.
  static CLIPTokenizer from_folder(const std::string& dir);

  // The caption's ids: start, pieces (truncated to max_length - 2), end. Invalid UTF-8 is an Error.
  std::vector<int64_t> encode(const std::string& caption, int64_t max_length = 77) const;
  // The pieces' ids alone (no start / end, no truncation).
  std::vector<int64_t> tokenize(const std::string& caption) const;
  // The normalised text step 1 makes (for messages and tests).
  static std::string normalize(const std::string& caption);

  int64_t start_id() const { return start_id_; }
  int64_t end_id() const { return end_id_; }
  int64_t vocab_size() const { return static_cast<int64_t>(vocab_.size()); }

 private:
  void bpe(const std::string& piece, std::vector<int64_t>& out) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::map<std::pair<std::string, std::string>, int64_t> ranks_;
  std::string byte_symbol_[256];  // byte -> its printable character, UTF-8 encoded
  int64_t start_id_ = -1, end_id_ = -1;
  std::string vocab_path_;
};

}  // namespace dtrainer::models
