#pragma once
// Which weights of a checkpoint a reader takes (dtckpt export, dteval, a stage's init_from), torch-free.

#include <string>

#include "dtrainer/core/name_table.h"

namespace dtrainer::ckpt {

enum class WeightsSource {
  kAuto,    // the EMA weights when the checkpoint has them, else the trained parameters
  kParams,  // the trained parameters (what the optimizer updates; what eval_loss measures)
  kEma,     // the first weight average kept: the EMA, or the first phema profile (what the trainer samples with)
};
const NameTable<WeightsSource>& name_table(WeightsSource);  // auto | params | ema
WeightsSource parse_weights_source(const std::string& field, const std::string& text);

}  // namespace dtrainer::ckpt
