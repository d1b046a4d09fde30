#pragma once
// Snapshots of a run's power-function EMA profiles (EDM2's post-hoc EMA; parallel/power_ema.h),
// the input of `dtckpt phema`. One directory per snapshot time, named by the images seen,
//
//   <run>/phema/img_000000012800/state.h5, meta.json, COMPLETE
//
// state.h5 holds one dataset per unit and profile, units/<unit>/phema_<sigma_rel>, in fp16, bf16
// or fp32, written like a checkpoint: rank 0 lays the file out, every rank writes its own shard's
// slice (no gather), failures are agreed on, and the directory appears (renamed from .tmp-) only
// whole, with each dataset's CRC-32 in meta.json. The layout does not depend on the world size.
// meta.json records the images and step, each profile's sigma_rel and gamma, the storage dtype,
// the parameter layout and the run's identity (seed, model), so a reconstruction can refuse
// snapshots of another model or run. Snapshots are never rotated; a resume moves those of an
// abandoned trajectory (beyond the checkpoint resumed) into <run>/phema/superseded/.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <mpi.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "dtrainer/models/parameter_layout.h"
#include "dtrainer/parallel/sharded_params.h"

namespace dtrainer::ckpt {

constexpr int kPhemaSnapshotFormatVersion = 1;

// "img_000000012800"
std::string phema_snapshot_name(int64_t images);

struct PhemaSnapshotSave {
  std::string dir;
  int64_t bytes = 0;      // state.h5's size
  bool replaced = false;  // a snapshot of the same images (an earlier attempt's) was replaced
};

// Collective over `comm`. Saves every power-function profile `params` keeps (its phema_* averages)
// at `images` / `step` under `root`, stored as `dtype` (fp16, bf16 or fp32). run: the run's identity
// ({"seed", "model", ...}: what reconstructions compare); config_toml: its configuration. A value beyond the
// dtype's range (fp16: 65504) is an error naming the unit and profile, not an infinity on disk.
// Throws CollectiveError on every rank when any rank fails; nothing is left but what was there.
PhemaSnapshotSave save_phema_snapshot(const std::string& root, int64_t images, int64_t step,
                                      const parallel::ShardedParameters& params,
                                      const std::vector<models::UnitLayout>& layout, torch::ScalarType dtype,
                                      const nlohmann::json& run, const std::string& config_toml, MPI_Comm comm);

// The complete snapshots under root (images, directory), oldest first.
std::vector<std::pair<int64_t, std::string>> complete_phema_snapshots(const std::string& root);

// Moves the snapshots beyond `images` into <root>/superseded/ (one process: rank 0); returns where
// each went.
std::vector<std::string> supersede_phema_snapshots_after(const std::string& root, int64_t images);

struct PhemaSnapshotProfile {
  std::string name;  // phema_0.05
  double sigma_rel = 0, gamma = 0;
};

// One complete snapshot, read without MPI or a model (tools). Throws Error naming the file when the
// directory is not a complete snapshot or its manifest is malformed.
class PhemaSnapshotReader {
 public:
  explicit PhemaSnapshotReader(const std::string& dir);
  ~PhemaSnapshotReader();
  PhemaSnapshotReader(const PhemaSnapshotReader&) = delete;
  PhemaSnapshotReader& operator=(const PhemaSnapshotReader&) = delete;

  const std::string& dir() const { return dir_; }
  const nlohmann::json& meta() const { return meta_; }
  int64_t images() const;
  int64_t step() const;
  torch::ScalarType dtype() const { return dtype_; }
  const std::vector<PhemaSnapshotProfile>& profiles() const { return profiles_; }
  std::vector<models::UnitLayout> layout() const;
  const nlohmann::json& run() const;  // the run's identity as saved
  // The profile's data for the unit, as fp32 (numel elements), verified against its checksum
  // (verify = false: as stored, for validators that report every problem themselves).
  torch::Tensor read(const std::string& unit, const std::string& profile, int64_t numel, bool verify = true) const;
  // "" when the dataset has numel elements of the snapshot's dtype, else the problem.
  std::string dataset_problem(const std::string& unit, const std::string& profile, int64_t numel) const;

 private:
  std::string dir_, h5_;
  nlohmann::json meta_;
  torch::ScalarType dtype_ = torch::kFloat16;
  std::vector<PhemaSnapshotProfile> profiles_;
  int64_t file_ = -1;  // hid_t
};

// "" when snapshot `s` can be combined with `reference` (the same parameter layout and run
// identity), else why not, naming both.
std::string phema_snapshot_mismatch(const PhemaSnapshotReader& s, const PhemaSnapshotReader& reference);

// Every problem with the run's snapshots (root = <run>/phema), one line each: incomplete or
// unreadable ones, layouts or identities that differ from the newest, missing datasets, wrong
// sizes, checksums, non-finite values (values = false: structure only). Empty when sound.
std::vector<std::string> validate_phema_snapshots(const std::string& root, bool values);

}  // namespace dtrainer::ckpt
