#pragma once
// How a run averages its weights (docs/TRAINING.md, "Weight averages"): an exponential EMA
// (ema_decay, warmed up as min(decay, (1 + step) / (10 + step))), EDM2's power-function profiles
// (ema = "phema": each phema_sigma_rel tracked from image 0, snapshots every
// phema_snapshot_images for post-hoc reconstruction with `dtckpt phema`), or none. The trainer
// samples and evaluates with the first average kept (the EMA, or the first profile).

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/core/name_table.h"

namespace dtrainer::train {

struct TrainConfig;

enum class WeightAveraging { kExponential, kPhema, kNone };
const NameTable<WeightAveraging>& name_table(WeightAveraging);  // exponential | phema | none

// How the profiles' snapshots are stored (the training state itself stays fp32).
enum class SnapshotDtype { kFp16, kBf16, kFp32 };
const NameTable<SnapshotDtype>& name_table(SnapshotDtype);  // fp16 | bf16 | fp32

// The sharding configuration's averages: the EMA's decay (0: none) and the profiles (empty: none).
double exponential_ema_decay(const TrainConfig& c);
std::vector<double> phema_profiles(const TrainConfig& c);
// How many averages the run keeps (each one fp32 copy of the rank's shard).
int weight_average_count(const TrainConfig& c);

// The decay of each kept average for optimizer step `step` (from 1), in the order the sharding
// configuration names them: the EMA's warmed-up decay, then each profile's
// beta = (1 - global_batch / images)^(gamma + 1) at images = step x global_batch.
std::vector<double> weight_average_decays(const TrainConfig& c, int64_t step);

// Images between snapshots: phema_snapshot_images, or (0 = auto) the multiple of global_batch that
// gives about 32 snapshots over the run. 0 when the run keeps no profiles.
int64_t phema_snapshot_interval(const TrainConfig& c);
// Whether step `step` ends with a snapshot: its images reach a multiple of the interval, or it is
// the last step (so the run's end can always be reconstructed).
bool phema_snapshot_due(const TrainConfig& c, int64_t step);

// One line for the plan: what is averaged, and for phema the exponents, the snapshot interval, how
// many snapshots the run keeps and their size for a model of `params` parameters.
std::string describe_weight_averaging(const TrainConfig& c, int64_t params);

// The cross-field checks (validate_train_config calls it): each sigma_rel in EDM2's range, none
// twice, a snapshot interval that is a multiple of global_batch. Throws Error naming the field.
void validate_weight_averaging(const TrainConfig& c);

}  // namespace dtrainer::train
