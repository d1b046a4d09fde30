#pragma once
// OpTally — counts what a forward pass actually executes, from the runtime shapes of the tensors
// each layer sees. Model code routes every convolution, linear, norm and attention product through
// the tallying helpers (src/models/tallied_ops.h); while a ScopedOpTally is alive on this thread
// they add to it, otherwise they cost one branch. Used to prove the analytic counts
// (models/unet_cost.h) right; the categories are the same as OpCount's.

#include <cstdint>

namespace dtrainer::models {

struct OpTally {
  int64_t macs_linear_conv = 0;
  int64_t macs_attention = 0;
  int64_t activation_elems = 0;
  // The same three, counted only inside transformer stacks / attention blocks.
  int64_t transformer_macs_linear_conv = 0;
  int64_t transformer_macs_attention = 0;
  int64_t transformer_activation_elems = 0;
};

// Installs `tally` as this thread's active tally for the scope's lifetime (scopes nest).
class ScopedOpTally {
 public:
  explicit ScopedOpTally(OpTally& tally);
  ~ScopedOpTally();
  ScopedOpTally(const ScopedOpTally&) = delete;
  ScopedOpTally& operator=(const ScopedOpTally&) = delete;

 private:
  OpTally* previous_;
};

// Marks the ops run in its scope as "inside a transformer stack" (scopes nest).
class TransformerScope {
 public:
  TransformerScope();
  ~TransformerScope();
  TransformerScope(const TransformerScope&) = delete;
  TransformerScope& operator=(const TransformerScope&) = delete;

 private:
  bool previous_;
};

namespace tally_detail {
OpTally* active();
bool in_transformer();
void add(int64_t macs_linear_conv, int64_t macs_attention, int64_t activation_elems);
}  // namespace tally_detail

}  // namespace dtrainer::models
