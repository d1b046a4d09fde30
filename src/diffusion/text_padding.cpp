#include "dtrainer/diffusion/text_padding.h"

#include <cmath>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"
#include "dtrainer/diffusion/objective.h"

namespace dtrainer::diffusion {

const NameTable<TextPadding>& name_table(TextPadding) {
  static const NameTable<TextPadding> t{{"zero", TextPadding::kZero},
                                        {"replicate", TextPadding::kReplicate},
                                        {"noisy_replicate", TextPadding::kNoisyReplicate}};
  return t;
}
TextPadding parse_text_padding(const std::string& field, const std::string& text) {
  return name_table(TextPadding{}).parse(field, text);
}

PaddedText pad_text(const std::vector<torch::Tensor>& prompts, const TextPaddingConfig& c,
                    const std::vector<int64_t>& ids, int64_t step) {
  const int64_t B = static_cast<int64_t>(prompts.size()), T = c.max_tokens;
  if (B == 0) throw Error("prompts", "empty batch");
  if (T < 1) throw Error("text.max_tokens", "must be at least 1");
  if (static_cast<int64_t>(ids.size()) != B) throw Error("sample_ids", "one id per prompt is needed");
  if (!(c.beta_txt >= 0)) throw Error("text.beta_txt", "must be >= 0");
  const int64_t D = prompts[0].dim() == 2 ? prompts[0].size(1) : -1;
  PaddedText out;
  out.tokens = torch::zeros({B, T, D > 0 ? D : 1}, prompts[0].options().dtype(torch::kFloat32));
  out.mask = torch::zeros({B, T}, torch::kBool);
  for (int64_t i = 0; i < B; ++i) {
    const torch::Tensor& p = prompts[i];
    if (p.dim() != 2 || p.size(1) != D || p.size(0) < 1)
      throw Error("prompts[" + std::to_string(i) + "]",
                  "expected [L >= 1, " + std::to_string(D) + "] token embeddings");
    const int64_t L = std::min(p.size(0), T);
    const torch::Tensor prompt = p.narrow(0, 0, L);  // any float dtype; copies below convert to float32
    if (c.policy == TextPadding::kZero || L == T) {
      out.tokens[i].narrow(0, 0, L).copy_(prompt);
      out.mask[i].narrow(0, 0, c.policy == TextPadding::kZero ? L : T).fill_(true);
      continue;
    }
    const int64_t m = (T + L - 1) / L;  // copies, the original included
    torch::Tensor row = prompt.to(torch::kFloat32).repeat({m, 1}).narrow(0, 0, T).clone();
    if (c.policy == TextPadding::kNoisyReplicate && c.beta_txt > 0) {
      const torch::Tensor sigma_ch = prompt.to(torch::kFloat32).std(0, /*unbiased=*/false);  // [D]
      const double scale = std::sqrt(c.beta_txt) * std::sqrt(static_cast<double>(m - 1));    // (beta_txt: a variance)
      const at::Generator gen = keyed_generator(stream_key(c.seed, RngPurpose::kTextPadding, step, ids[i]));
      const torch::Tensor noise = torch::randn({T - L, D}, gen, torch::kFloat32).mul_(scale * sigma_ch);
      row.narrow(0, L, T - L).add_(noise.to(row.dtype()));
    }
    out.tokens[i].copy_(row);
    out.mask[i].fill_(true);
  }
  return out;
}

}  // namespace dtrainer::diffusion
