#pragma once
// Post-hoc EMA (EDM2): the average of a run's weights for any sigma_rel, reconstructed from its
// power-function snapshots (ckpt/phema_snapshot.h) as one safetensors file per sigma_rel, named
// like `dtckpt export`'s (so `dteval --weights-file` and `dtrainer --init-weights` read it).
// The weights of the snapshots come from parallel::phema_solve (double precision, once); the sum
// streams one unit at a time: each snapshot's unit read once for every target, accumulated in
// fp64, written, freed — memory is a few units, whatever the model's size.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/parallel/power_ema.h"

namespace dtrainer::ckpt {

struct PhemaRequest {
  std::vector<double> sigma_rel;              // the targets (each in (0, 1/sqrt 12))
  std::vector<std::string> outs;              // one .safetensors path per target (written atomically)
  int64_t at_images = 0;                      // the time to reconstruct: a snapshot's images; 0 = the newest
  torch::ScalarType dtype = torch::kFloat32;  // in the files: F32, BF16 or F16
};

struct PhemaOutput {
  double sigma_rel = 0, gamma = 0;
  std::string out;
  int64_t bytes = 0;
  parallel::PhemaSolution solution;  // one weight per input (snapshot time x profile)
};

struct PhemaReconstruction {
  int64_t at_images = 0, step = 0;
  std::vector<std::string> inputs;               // "img_…/phema_0.05", in solve order
  std::vector<parallel::PhemaProfile> profiles;  // their (images, gamma)
  std::vector<PhemaOutput> outputs;
  int64_t tensors = 0, elements = 0;
};

// root: <run>/phema (or a run directory: its phema/). progress(unit, units) after each unit.
// Throws Error: no snapshots, a target outside EDM2's range, at_images not a snapshot's, snapshots
// of another model or run, a corrupt dataset — with nothing written.
PhemaReconstruction reconstruct_phema(const std::string& root, const PhemaRequest& request,
                                      const std::function<void(size_t, size_t)>& progress = {});

// The snapshot root a path means: itself when it holds img_* snapshots, else <path>/phema.
std::string phema_root(const std::string& path);

}  // namespace dtrainer::ckpt
