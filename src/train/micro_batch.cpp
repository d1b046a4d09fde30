#include "dtrainer/train/micro_batch.h"

#include <torch/torch.h>

#include "dtrainer/diffusion/conditioning.h"
#include "dtrainer/models/token_mask.h"
#include "dtrainer/train/sampling.h"

namespace dtrainer::train {

MicroBatch make_micro_batch(const data::Batch& batch, int64_t k, int64_t step, const diffusion::Objective& objective,
                            const MicroBatchSetup& s) {
  const int64_t micro = s.micro;
  const auto rows = torch::indexing::Slice(k * micro, (k + 1) * micro);
  const std::vector<int64_t> ids(batch.sample_ids.begin() + k * micro, batch.sample_ids.begin() + (k + 1) * micro);
  const diffusion::NoisedBatch nb = objective.make_batch(batch.latents.index({rows}), ids, step - 1);
  torch::Tensor text = batch.text.index({rows}), mask = batch.text_mask.index({rows});
  if (s.drop_text) std::tie(text, mask) = diffusion::drop_text(text, mask, nb.keep_text);
  MicroBatch m;
  if (s.control) {
    models::ControlInputs c;
    c.high = to_device(batch.controls_high.index({rows}), s.device);
    c.low = to_device(batch.controls_low.index({rows}), s.device);
    c.low_weight = to_device(diffusion::control_low_weight(nb.t_unit), s.device);
    c.keep = to_device(nb.keep_control, s.device);
    m.controls = std::move(c);
  }
  if (s.token_mask_ratio > 0)  // (keyed by the step and the sample: the same on any rank count)
    m.token_keep = to_device(models::kept_tokens(s.seed, step, ids, s.tokens, s.token_mask_ratio), s.device);
  m.noised = to_device(nb, s.device);
  m.text = to_device(text, s.device);
  m.mask = attention_mask(mask, s.device);
  return m;
}

}  // namespace dtrainer::train
