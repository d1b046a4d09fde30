#pragma once
// Checkpoints that do not depend on the world size: every unit's full fp32 state (parameters,
// AdamW m and v, EMA) as one dataset per unit and kind in one HDF5 file, written collectively with
// parallel HDF5 (each rank writes its own shard's slice: no gather, every rank's bandwidth), beside
// a JSON manifest (step, loader state, counters, the resolved config). The random state is the
// seed and the step: every draw is keyed by them (core/rng.h).
//
//   <root>/step_00000100/state.h5, meta.json, COMPLETE
//
// A checkpoint is written under <root>/.tmp-step_…, gets its COMPLETE marker last, and is then
// renamed into place, so a directory named step_* is always whole; a run killed while writing
// leaves only a .tmp- directory, which the next save removes.

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "dtrainer/dist/sharded_params.h"

namespace dtrainer::train {

// Collective over MPI_COMM_WORLD (the ranks of `params`). Returns the published directory. keep:
// complete checkpoints kept afterwards (older ones deleted by rank 0).
std::string save_checkpoint(const std::string& root, int64_t step, const dist::ShardedParameters& params,
                            const nlohmann::json& meta, int64_t keep);

// The newest complete checkpoint under root (by step), if any.
std::optional<std::string> latest_checkpoint(const std::string& root);

// Loads `dir` into params (every rank reads; any world size) and returns its meta.json. Throws
// Error naming the file when it is incomplete, unreadable, or does not match the model's units.
nlohmann::json load_checkpoint(const std::string& dir, dist::ShardedParameters& params);

}  // namespace dtrainer::train
