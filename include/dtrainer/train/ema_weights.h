#pragma once
// The EMA weights in the model for a scope (sampling, alignment), the trained ones back by
// restore() at its end, or by the destructor when an exception leaves the scope. The swap is a
// collective under zero1/2, so it is not undone while an exception only this rank holds unwinds
// (core/error.h: the run is ending, and the peers would never join); a CollectiveError, which
// every rank holds, undoes it on every rank.

#include "dtrainer/core/error.h"
#include "dtrainer/parallel/sharded_params.h"

namespace dtrainer::train {

class EmaWeights {
 public:
  EmaWeights(parallel::ShardedParameters& params, bool on) : params_(params), on_(on) {
    if (on_) params_.swap_ema();
  }
  void restore() {  // at the end of the scope (errors propagate)
    if (on_) params_.swap_ema();
    on_ = false;
  }
  ~EmaWeights() {  // on the way out of an exception
    if (!on_ || unwinding()) return;
    try {
      params_.swap_ema();
    } catch (...) {  // the exception on its way out says what failed
    }
  }
  EmaWeights(const EmaWeights&) = delete;
  EmaWeights& operator=(const EmaWeights&) = delete;

 private:
  parallel::ShardedParameters& params_;
  bool on_;
};

}  // namespace dtrainer::train
