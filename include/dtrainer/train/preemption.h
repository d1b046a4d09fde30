#pragma once
// Stopping without losing progress: SIGTERM (Slurm's preemption, mpirun's teardown), SIGINT (Ctrl-C
// reaching the ranks), SIGUSR1 and SIGUSR2 (what `#SBATCH --signal` sends before the time limit;
// forwarded by mpirun without stopping the job) set a flag, nothing else happens in the handler; the
// training loop checks it at every step boundary, agrees across ranks, checkpoints, leaves the
// PREEMPTED marker and exits 0.

#include <string>

namespace dtrainer::train {

void install_preemption_handlers();
bool preemption_requested();           // this process received one of the signals above
int preemption_signal();               // which one (0 if none)
std::string preemption_description();  // "SIGTERM at 11:57:44" (this rank's first), "" if none

}  // namespace dtrainer::train
