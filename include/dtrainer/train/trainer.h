#pragma once
// The `dtrainer` program: configuration, data, model, sharding, the training loop, metrics,
// evaluation, samples, checkpoints and preemption (docs/TRAINING.md).
//
// Exit codes: 0 done (or preempted after a checkpoint), 2 bad configuration (nothing written),
// 1 any other failure (every rank exits, the failing rank named).

namespace dtrainer::train {

int trainer_main(int argc, char** argv);

}  // namespace dtrainer::train
