#pragma once
// How many nouns a caption has — the image-noun pairs that are [S1]'s data-size axis (§4), when no
// part-of-speech tagger has counted them. A heuristic, not a parser: every word of letters (after
// lower-casing) counts unless it is an English function word (article, pronoun, preposition,
// conjunction, auxiliary, number word), a common adjective of colour, size, count or quality, or
// looks like an adverb or verb form ("-ly", "-ing", "-ed"). It over-counts verbs and rarer
// adjectives and under-counts gerund nouns ("painting"); on plain captions it is within a noun or
// two. A count from a tagger (spaCy's NOUN + PROPN) can be given instead: `nouns` in dtdata encode's
// --list file.

#include <cstdint>
#include <string>

namespace dtrainer::data {

int64_t count_caption_nouns(const std::string& caption);

}  // namespace dtrainer::data
