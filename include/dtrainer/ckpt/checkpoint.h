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

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dtrainer/dist/sharded_params.h"
#include "dtrainer/models/parameter_layout.h"

namespace dtrainer::ckpt {

// meta.json's "format_version": 1 (no parameter layout; meta.json had no version) or 2 (with it).
constexpr int kCheckpointFormatVersion = 2;

// Collective over MPI_COMM_WORLD (the ranks of `params`). Returns the published directory. layout:
// the model's parameter layout (models::parameter_layout, one entry per unit of params). keep:
// complete checkpoints kept afterwards (older ones deleted by rank 0).
std::string save_checkpoint(const std::string& root, int64_t step, const dist::ShardedParameters& params,
                            const std::vector<models::UnitLayout>& layout, const nlohmann::json& meta, int64_t keep);

// The newest complete checkpoint under root (by step), if any.
std::optional<std::string> latest_checkpoint(const std::string& root);

// Loads `dir` into params (every rank reads; any world size) and returns its meta.json. Throws
// Error naming the file when it is incomplete, unreadable, or does not match the model's units.
nlohmann::json load_checkpoint(const std::string& dir, dist::ShardedParameters& params);

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
  // kind: params | m | v | ema. has(): whether the checkpoint stores it (ema only with EMA on).
  bool has(const std::string& unit, const std::string& kind) const;
  bool has_ema() const;  // every unit has its EMA (the run kept one)
  // Elements stored for the unit and kind: -1 when the dataset is missing or not 1-D.
  int64_t stored_length(const std::string& unit, const std::string& kind) const;
  // The unit's full flat fp32 data (numel elements, no padding).
  torch::Tensor read(const std::string& unit, const std::string& kind, int64_t numel) const;

 private:
  std::string dir_, h5_;
  nlohmann::json meta_;
  int version_ = 1;
  int64_t file_ = -1;  // hid_t
};

nlohmann::json layout_to_json(const std::vector<models::UnitLayout>& layout);
std::vector<models::UnitLayout> layout_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace dtrainer::ckpt
