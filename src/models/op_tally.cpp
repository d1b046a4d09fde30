#include "dtrainer/models/op_tally.h"

namespace dtrainer::models {
namespace {
thread_local OpTally* g_active = nullptr;
thread_local bool g_in_transformer = false;
}  // namespace

ScopedOpTally::ScopedOpTally(OpTally& tally) : previous_(g_active) { g_active = &tally; }
ScopedOpTally::~ScopedOpTally() { g_active = previous_; }

TransformerScope::TransformerScope() : previous_(g_in_transformer) { g_in_transformer = true; }
TransformerScope::~TransformerScope() { g_in_transformer = previous_; }

namespace tally_detail {
OpTally* active() { return g_active; }
bool in_transformer() { return g_in_transformer; }
void add(int64_t macs_linear_conv, int64_t macs_attention, int64_t activation_elems) {
  OpTally* t = g_active;
  if (!t) return;
  t->macs_linear_conv += macs_linear_conv;
  t->macs_attention += macs_attention;
  t->activation_elems += activation_elems;
  if (g_in_transformer) {
    t->transformer_macs_linear_conv += macs_linear_conv;
    t->transformer_macs_attention += macs_attention;
    t->transformer_activation_elems += activation_elems;
  }
}
}  // namespace tally_detail

}  // namespace dtrainer::models
