#include "dtrainer/models/clip_tokenizer.h"

#include <filesystem>
#include <limits>
#include <memory>
#include <sstream>

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>

#include <nlohmann/json.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"

namespace dtrainer::models {
namespace {

constexpr const char* kStart = "<|startoftext|>";
constexpr const char* kEnd = "<|endoftext|>";
// CLIP's split pattern (case-insensitive, as the reference compiles it).
constexpr const char* kPattern =
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

std::string utf8(const icu::UnicodeString& s) {
  std::string out;
  s.toUTF8String(out);
  return out;
}

void check(UErrorCode status, const char* what) {
  if (U_FAILURE(status)) throw Error("tokenizer", std::string(what) + ": " + u_errorName(status));
}

// The caption as UTF-16, refusing ill-formed UTF-8 (which would otherwise become U+FFFD silently).
icu::UnicodeString decode(const std::string& text) {
  UErrorCode status = U_ZERO_ERROR;
  int32_t length = 0;
  u_strFromUTF8(nullptr, 0, &length, text.data(), static_cast<int32_t>(text.size()), &status);
  if (status == U_INVALID_CHAR_FOUND || status == U_ILLEGAL_CHAR_FOUND)
    throw Error("caption", "is not valid UTF-8: \"" + text.substr(0, 60) + (text.size() > 60 ? "...\"" : "\""));
  return icu::UnicodeString::fromUTF8(text);
}

// GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, the others for
// U+0100 upwards in byte order.
void byte_table(std::string (&table)[256]) {
  auto printable = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); };
  int next = 256;
  for (int b = 0; b < 256; ++b) table[b] = utf8(icu::UnicodeString(static_cast<UChar32>(printable(b) ? b : next++)));
}

}  // namespace

CLIPTokenizer::CLIPTokenizer(const std::string& vocab_json, const std::string& merges_txt) : vocab_path_(vocab_json) {
  byte_table(byte_symbol_);
  nlohmann::json v;
  try {
    v = nlohmann::json::parse(read_file(vocab_json));
  } catch (const nlohmann::json::exception& e) {
    throw Error(vocab_json, std::string("is not valid JSON: ") + e.what());
  }
  if (!v.is_object() || v.empty()) throw Error(vocab_json, "expected an object of token: id");
  for (const auto& [token, id] : v.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      throw Error(vocab_json, "token " + nlohmann::json(token).dump() + " has id " + id.dump() + ", not an id >= 0");
    vocab_[token] = id.get<int64_t>();
  }
  for (const auto& [token, id] : {std::pair<const char*, int64_t*>{kStart, &start_id_}, {kEnd, &end_id_}}) {
    const auto it = vocab_.find(token);
    if (it == vocab_.end()) throw Error(vocab_json, std::string("has no ") + token + " token (not a CLIP vocabulary?)");
    *id = it->second;
  }
  std::istringstream in(read_file(merges_txt));
  std::string line;
  int64_t number = 0, rank = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (number == 1 && line[0] == '#')) continue;  // ("#version: 0.2")
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos)
      throw Error(merges_txt + ":" + std::to_string(number),
                  "expected two symbols separated by a space, got '" + line + "'");
    ranks_.emplace(std::make_pair(line.substr(0, space), line.substr(space + 1)), rank++);
  }
  if (ranks_.empty()) throw Error(merges_txt, "has no merges");
}

CLIPTokenizer CLIPTokenizer::from_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir))
    throw Error(dir,
                "is not a folder (expected a CLIP tokenizer folder: vocab.json and merges.txt, e.g. the "
                "'tokenizer' folder of an SD release)");
  for (const char* f : {"vocab.json", "merges.txt"})
    if (!fs::exists(fs::path(dir) / f)) throw Error((fs::path(dir) / f).string(), "not found (the tokenizer needs it)");
  return CLIPTokenizer((fs::path(dir) / "vocab.json").string(), (fs::path(dir) / "merges.txt").string());
}

std::string CLIPTokenizer::normalize(const std::string& caption) {
  icu::UnicodeString s = decode(caption);
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  check(status, "NFC normaliser");
  s = nfc->normalize(s, status);
  check(status, "NFC normalisation");
  icu::RegexMatcher spaces("\\s+", 0, status);
  check(status, "whitespace pattern");
  spaces.reset(s);
  s = spaces.replaceAll(" ", status);
  check(status, "whitespace");
  int32_t begin = 0, end = s.length();
  while (begin < end && s.charAt(begin) == ' ') ++begin;
  while (end > begin && s.charAt(end - 1) == ' ') --end;
  icu::UnicodeString trimmed(s, begin, end - begin);
  trimmed.toLower(icu::Locale::getRoot());
  return utf8(trimmed);
}

void CLIPTokenizer::bpe(const std::string& piece, std::vector<int64_t>& out) const {
  auto id_of = [&](const std::string& symbol) {
    const auto it = vocab_.find(symbol);
    if (it == vocab_.end())
      throw Error(vocab_path_, "has no token '" + symbol +
                                   "' that the merges make (vocab.json and merges.txt of "
                                   "different tokenizers?)");
    return it->second;
  };
  if (piece == kStart || piece == kEnd) {  // (the reference keeps the special tokens whole)
    out.push_back(id_of(piece));
    return;
  }
  std::vector<std::string> word;
  for (unsigned char b : piece) word.push_back(byte_symbol_[b]);
  word.back() += "</w>";
  while (word.size() > 1) {
    int64_t best = std::numeric_limits<int64_t>::max();
    const std::pair<std::string, std::string>* pair = nullptr;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = ranks_.find({word[i], word[i + 1]});
      if (it != ranks_.end() && it->second < best) {
        best = it->second;
        pair = &it->first;
      }
    }
    if (!pair) break;
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size(); ++i) {
      if (i + 1 < word.size() && word[i] == pair->first && word[i + 1] == pair->second) {
        merged.push_back(word[i] + word[i + 1]);
        ++i;
      } else {
        merged.push_back(word[i]);
      }
    }
    word = std::move(merged);
  }
  for (const auto& symbol : word) out.push_back(id_of(symbol));
}

std::vector<int64_t> CLIPTokenizer::tokenize(const std::string& caption) const {
  const icu::UnicodeString text = icu::UnicodeString::fromUTF8(normalize(caption));
  UErrorCode status = U_ZERO_ERROR;
  icu::RegexMatcher pieces(kPattern, UREGEX_CASE_INSENSITIVE, status);
  check(status, "CLIP's split pattern");
  pieces.reset(text);
  std::vector<int64_t> ids;
  while (pieces.find(status)) {
    check(status, "splitting");
    bpe(utf8(pieces.group(status)), ids);
    check(status, "splitting");
  }
  return ids;
}

std::vector<int64_t> CLIPTokenizer::encode(const std::string& caption, int64_t max_length) const {
  if (max_length < 2) throw Error("max_length", "must be at least 2 (the start and end tokens)");
  std::vector<int64_t> pieces = tokenize(caption);
  if (static_cast<int64_t>(pieces.size()) > max_length - 2) pieces.resize(static_cast<size_t>(max_length - 2));
  std::vector<int64_t> ids{start_id_};
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  ids.push_back(end_id_);
  return ids;
}

}  // namespace dtrainer::models
