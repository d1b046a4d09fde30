#include "dtrainer/train/run_checkpoints.h"

#include <chrono>
#include <cstdio>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/core/log.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/train/train_config.h"

namespace dtrainer::train {

RunCheckpoints::RunCheckpoints(const TrainConfig& c, const std::filesystem::path& run_dir, const ResumePlan& resume,
                               std::string config_toml, nlohmann::json about)
    : c_(c), dir_(run_dir / "ckpt"), resume_(resume), toml_(std::move(config_toml)), about_(std::move(about)) {}

bool RunCheckpoints::resume(parallel::ShardedParameters& params, const std::vector<models::UnitLayout>& layout,
                            MPI_Comm comm, int rank, TrainingProgress& progress, nlohmann::json& loader_state) {
  if (!resume_.checkpoint) return false;
  const std::string from = *resume_.checkpoint;
  nlohmann::json m;
  // Every rank reads; a failure on any (a corrupt dataset, a checksum) is every rank's, with the
  // previous sound checkpoint named when --resume auto picked a broken newest one.
  try {
    parallel::agree(comm, [&] { m = ckpt::load_checkpoint(from, params, &layout); });
  } catch (const CollectiveError& e) {
    const std::string hint = c_.resume == "auto" && rank == 0 ? previous_checkpoint_hint(dir_, resume_.step) : "";
    throw CollectiveError(e.where(), e.detail() + hint);
  }
  progress = TrainingProgress::from_json(m.at("trainer"));
  loader_state = m.at("loader");
  newest_ = progress.step;
  int world = 1;
  MPI_Comm_size(comm, &world);
  log_info("resumed from " + from + " at step " + std::to_string(progress.step) + " (saved by " +
           std::to_string(m.value("saved_by_world_size", 0)) + " ranks, now " + std::to_string(world) + ")");
  return true;
}

void RunCheckpoints::save(const TrainingProgress& progress, const nlohmann::json& loader_state,
                          const parallel::ShardedParameters& params, const std::vector<models::UnitLayout>& layout,
                          MPI_Comm comm) {
  const int64_t step = progress.step;
  if (step == newest_) return;  // (a preemption right after a scheduled save)
  const auto t0 = std::chrono::steady_clock::now();
  ckpt::SaveOptions o;
  o.keep = c_.keep_ckpts;
  o.resumed_from = resume_.checkpoint.value_or("");
  nlohmann::json meta = about_;
  meta.update({{"trainer", progress.to_json()}, {"loader", loader_state}, {"seed", c_.seed}, {"config_toml", toml_}});
  const ckpt::SaveResult r = ckpt::save_checkpoint(dir_.string(), step, params, layout, meta, o, comm);
  newest_ = step;
  if (r.already_saved) {
    log_info("checkpoint " + r.dir + " is the one this run resumed from: kept as it is");
    return;
  }
  char took[32];
  std::snprintf(took, sizeof took, "%.3f s",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  log_info("checkpoint " + r.dir + " (" + format_bytes(static_cast<double>(r.bytes)) + ", " + took + ")" +
           (r.replaced ? ", replacing the step_ of another trajectory" : ""));
  for (const auto& d : r.superseded)
    log_warn("checkpoint " + d +
             ": a newer step of the trajectory this run abandoned by resuming an older checkpoint; "
             "moved aside so that --resume auto never picks it (delete it when you do not need it)");
  for (const auto& w : r.warnings) log_warn(w);
}

}  // namespace dtrainer::train
