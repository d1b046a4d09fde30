#include "dtrainer/data/caption_nouns.h"

#include <cctype>
#include <set>

namespace dtrainer::data {
namespace {

bool ends_with(const std::string& w, const char* suffix) {
  const std::string s(suffix);
  return w.size() > s.size() + 1 && w.compare(w.size() - s.size(), s.size(), s) == 0;
}

const std::set<std::string>& not_nouns() {
  static const std::set<std::string> words = {
      // articles, determiners, pronouns
      "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "all", "both", "no", "other",
      "another", "such", "its", "it", "his", "her", "their", "our", "my", "your", "he", "she", "they", "we", "i", "you",
      "him", "them", "us", "me", "who", "whom", "which", "what", "whose", "there", "here", "one", "ones",
      // prepositions, conjunctions
      "of", "in", "on", "at", "by", "for", "with", "without", "from", "to", "into", "onto", "over", "under", "above",
      "below", "behind", "beside", "besides", "between", "among", "near", "next", "through", "across", "around",
      "against", "along", "inside", "outside", "up", "down", "off", "out", "about", "after", "before", "during",
      "while", "and", "or", "but", "nor", "so", "yet", "as", "than", "like", "if", "then", "when", "where", "left",
      "right", "top", "bottom", "front", "back", "middle", "center", "centre",
      // auxiliaries and common verbs
      "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "do", "does", "did", "can",
      "could", "will", "would", "shall", "should", "may", "might", "must", "not", "get", "gets", "got", "make", "makes",
      "made", "look", "looks", "sit", "sits", "stand", "stands", "lie", "lies", "hold", "holds", "show", "shows",
      "wear", "wears",
      // numbers
      "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "many", "few", "several", "more", "most",
      "much", "lots", "lot", "single", "double", "pair", "couple",
      // colours, sizes, qualities
      "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey", "gray", "golden",
      "silver", "dark", "light", "bright", "big", "small", "large", "little", "tiny", "huge", "tall", "short", "long",
      "wide", "narrow", "old", "new", "young", "good", "bad", "beautiful", "pretty", "nice", "cute", "happy", "sad",
      "very", "really", "too", "also", "just", "only", "close", "far", "high", "low", "hot", "cold", "wet", "dry",
      "full", "empty", "open", "closed", "clear", "colorful", "colourful", "wooden", "modern", "vintage", "different",
      "same", "various", "first", "second", "last"};
  return words;
}

}  // namespace

int64_t count_caption_nouns(const std::string& caption) {
  int64_t n = 0;
  std::string word;
  auto finish = [&] {
    if (!word.empty() && word.size() > 1 && !not_nouns().count(word) && !ends_with(word, "ly") &&
        !ends_with(word, "ing") && !ends_with(word, "ed"))
      ++n;
    word.clear();
  };
  bool suffix = false;  // letters after an apostrophe ("dog's", "they're") are no word of their own
  for (unsigned char c : caption) {
    if (std::isalpha(c) || c >= 0x80) {  // (non-ASCII bytes belong to words of other scripts)
      if (!suffix) word += static_cast<char>(std::tolower(c));
    } else {
      finish();
      suffix = c == '\'';
    }
  }
  finish();
  return n;
}

}  // namespace dtrainer::data
