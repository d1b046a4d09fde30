#pragma once
// Slurm preemption: SIGTERM and SIGUSR1 set a flag (nothing else happens in the handler); the
// training loop checks it at every step boundary, agrees across ranks, checkpoints and exits 0.

namespace dtrainer::train {

void install_preemption_handlers();
bool preemption_requested();  // this process received SIGTERM or SIGUSR1
int preemption_signal();      // which one (0 if none)

}  // namespace dtrainer::train
