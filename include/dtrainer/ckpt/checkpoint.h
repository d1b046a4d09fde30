#pragma once
// Checkpoints that do not depend on the world size: every unit's full fp32 state (parameters,
// AdamW m and v, EMA) as one dataset per unit and kind in one HDF5 file, written collectively with
// parallel HDF5 (each rank writes its own shard's slice: no gather, every rank's bandwidth), beside
// a JSON manifest (step, loader state, counters, the resolved config, and the parameter layout:
// each unit's named tensors and shapes, so tools such as dtckpt need no model). The random state
// is the seed and the step: every draw is keyed by them (core/rng.h).
//
//   <root>/step_00000100/state.h5, meta.json, COMPLETE
//
// A checkpoint is written under <root>/.tmp-step_…, gets its COMPLETE marker last, and is then
// renamed into place, so a directory named step_* is always whole; a run killed while writing
// leaves only a .tmp- directory, which the next save removes.
//
// Failures are agreed on (parallel/agreement.h): free space is checked before anything is written,
// and every collective step (create, each dataset, close, publish) ends with the ranks learning
// whether any failed, so a write error on one rank (ENOSPC, EIO, quota) makes every rank throw
// the same CollectiveError naming that rank, the file and the cause, with the previous checkpoint
// untouched and the partial one removed. Each dataset's CRC-32 (of its little-endian fp32 bytes,
// combined over the ranks' slices) is recorded in meta.json and verified whenever it is read.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <mpi.h>
#include <nlohmann/json.hpp>

#include "dtrainer/parallel/sharded_params.h"
#include "dtrainer/models/parameter_layout.h"

namespace dtrainer::ckpt {

// meta.json's "format_version": 1 (no parameter layout; meta.json had no version), 2 (with it),
// 3 (with per-dataset checksums).
constexpr int kCheckpointFormatVersion = 3;

struct SaveOptions {
  int64_t keep = 2;  // complete checkpoints kept afterwards (older ones deleted by rank 0)
  // The checkpoint this run resumed from: if it is the step being saved, it already holds this
  // state and is kept as it is. Any other existing step_N is replaced (another trajectory's).
  std::string resumed_from;
};

struct SaveResult {
  std::string dir;                      // the published checkpoint
  bool already_saved = false;           // it was the resumed checkpoint itself: nothing written
  bool replaced = false;                // an older step_N of another trajectory was replaced
  std::vector<std::string> superseded;  // newer checkpoints of an abandoned trajectory, moved to <root>/superseded/
  std::vector<std::string> removed;     // rotated away by `keep`
  int64_t bytes = 0;                    // state.h5's size
  std::vector<std::string> warnings;    // housekeeping that failed after the checkpoint was safe
};

// Collective over `comm` (the ranks of `params`). layout: the model's parameter layout
// (models::parameter_layout, one entry per unit of params). Throws CollectiveError on every rank
// when any rank fails.
SaveResult save_checkpoint(const std::string& root, int64_t step, const parallel::ShardedParameters& params,
                           const std::vector<models::UnitLayout>& layout, const nlohmann::json& meta,
                           const SaveOptions& options, MPI_Comm comm);

// Every complete checkpoint under root (step, directory), oldest first.
std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& root);

// The newest complete checkpoint under root (by step), if any.
std::optional<std::string> latest_checkpoint(const std::string& root);

// Loads `dir` into params (every rank reads; any world size) and returns its meta.json. Throws
// Error naming the file when it is incomplete, unreadable, corrupt (checksums), or does not match
// the model (model_layout, when given: the first tensor whose name or shape differs).
nlohmann::json load_checkpoint(const std::string& dir, parallel::ShardedParameters& params,
                               const std::vector<models::UnitLayout>* model_layout = nullptr);

// Read access to one complete checkpoint, without a model or MPI (tools). Throws Error naming the
// file when the directory is not a complete checkpoint or its files do not agree.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& dir);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::string& dir() const { return dir_; }
  const std::string& state_file() const { return h5_; }
  const nlohmann::json& meta() const { return meta_; }
  int64_t step() const;
  int format_version() const { return version_; }
  // The units as saved: name and element count, in model order.
  std::vector<std::pair<std::string, int64_t>> units() const;
  // The parameter layout (checked against the units' sizes). Throws when the checkpoint predates
  // layouts (saved before dtrainer recorded them).
  std::vector<models::UnitLayout> layout() const;
  // kind: params | m | v | ema | phema_SIGMA. has(): whether the checkpoint stores it (ema only
  // with the EMA on, phema_* with power-function profiles).
  bool has(const std::string& unit, const std::string& kind) const;
  bool has_ema() const;  // every unit has its EMA (the run kept one)
  // The weight averages it keeps (meta.json's "averages"; before that was recorded: "ema" when
  // every unit has one). The first is what the trainer sampled with.
  std::vector<std::string> averages() const;
  // Elements stored for the unit and kind: -1 when the dataset is missing or not 1-D.
  int64_t stored_length(const std::string& unit, const std::string& kind) const;
  // The unit's full flat fp32 data (numel elements, no padding), verified against the dataset's
  // checksum when the checkpoint has one (format 3): a mismatch throws Error naming the dataset.
  // verify = false: the data as stored, for validators that report every problem themselves.
  torch::Tensor read(const std::string& unit, const std::string& kind, int64_t numel, bool verify = true) const;
  bool has_checksums() const;
  // "" when `data` (read with verify = false) matches the recorded checksum or there is none;
  // otherwise the problem, naming the dataset.
  std::string checksum_problem(const std::string& unit, const std::string& kind, const torch::Tensor& data) const;

 private:
  std::string dir_, h5_;
  nlohmann::json meta_;
  int version_ = 1;
  int64_t file_ = -1;  // hid_t
};

nlohmann::json layout_to_json(const std::vector<models::UnitLayout>& layout);
std::vector<models::UnitLayout> layout_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace dtrainer::ckpt
