// dtrainer — train a diffusion backbone on MPI ranks (see `dtrainer --help`, docs/TRAINING.md).
#include "dtrainer/core/malloc_tuning.h"
#include "dtrainer/train/trainer.h"

int main(int argc, char** argv) {
  dtrainer::tune_malloc_for_streaming();
  return dtrainer::train::trainer_main(argc, argv);
}
