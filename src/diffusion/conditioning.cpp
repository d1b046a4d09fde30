#include "dtrainer/diffusion/conditioning.h"

#include <vector>

#include <torch/torch.h>

#include "dtrainer/diffusion/schedule.h"

namespace dtrainer::diffusion {

std::pair<torch::Tensor, torch::Tensor> null_text(int64_t batch, int64_t max_tokens, int64_t text_dim) {
  torch::Tensor text = torch::zeros({batch, max_tokens, text_dim});
  torch::Tensor mask = torch::zeros({batch, max_tokens}, torch::kBool);
  mask.select(1, 0).fill_(true);
  return {text, mask};
}

std::pair<torch::Tensor, torch::Tensor> drop_text(const torch::Tensor& text, const torch::Tensor& mask,
                                                  const torch::Tensor& keep) {
  auto [nt, nm] = null_text(text.size(0), text.size(1), text.size(2));
  return {torch::where(keep.view({-1, 1, 1}), text, nt), torch::where(keep.view({-1, 1}), mask, nm)};
}

torch::Tensor control_low_weight(const torch::Tensor& t_unit) {
  const int64_t n = t_unit.size(0);
  std::vector<float> gamma(n);
  for (int64_t i = 0; i < n; ++i) gamma[i] = static_cast<float>(power_cosine_gamma(t_unit[i].item<double>()));
  return torch::tensor(gamma);
}

}  // namespace dtrainer::diffusion
