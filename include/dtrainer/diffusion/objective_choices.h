#pragma once
// The training objective's named choices (SPEC §3), each with its one name table
// (core/name_table.h): what the model predicts, how the loss is weighted over timesteps, and how
// timesteps are drawn. Torch-free, so configurations can name them without LibTorch.

#include <string>

#include "dtrainer/core/name_table.h"

namespace dtrainer::diffusion {

enum class Target {
  kEps,   // predict the noise eps                                   ([S1], [S2] default)
  kV,     // predict v = sqrt(abar) eps - sqrt(1 - abar) x0
  kFlow,  // rectified flow: x_t = (1 - t) x0 + t eps, predict eps - x0   (SD3)
};
const NameTable<Target>& name_table(Target);  // eps | v | flow

enum class LossWeighting {
  kNone,          // w = 1
  kSigmaInvSq,    // w = sigma_t^-2 = SNR_t                              ([S2])
  kMinSnr,        // min-SNR-gamma: w = min(SNR, gamma) x (d x0 / d target)^2, i.e. min(SNR, gamma) on x0-error
  kTruncatedSnr,  // truncated SNR: max(SNR, 1) on the x0-error (Salimans & Ho 2022, progressive distillation)
};
const NameTable<LossWeighting>& name_table(LossWeighting);  // none | sigma_inv_sq | min_snr | truncated_snr

enum class TimestepSampling { kUniform, kLogitNormal };
const NameTable<TimestepSampling>& name_table(TimestepSampling);  // uniform | logit_normal

// The tables' parse(), for callers that name the type.
Target parse_target(const std::string& field, const std::string& text);
LossWeighting parse_loss_weighting(const std::string& field, const std::string& text);
TimestepSampling parse_timestep_sampling(const std::string& field, const std::string& text);

}  // namespace dtrainer::diffusion
