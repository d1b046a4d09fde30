#pragma once
// The text-padding policies' names (diffusion/text_padding.h says what each does), torch-free.

#include <string>

#include "dtrainer/core/name_table.h"

namespace dtrainer::diffusion {

enum class TextPadding { kZero, kReplicate, kNoisyReplicate };
const NameTable<TextPadding>& name_table(TextPadding);  // zero | replicate | noisy_replicate
TextPadding parse_text_padding(const std::string& field, const std::string& text);

}  // namespace dtrainer::diffusion
