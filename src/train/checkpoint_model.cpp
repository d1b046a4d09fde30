#include "dtrainer/train/checkpoint_model.h"

#include <filesystem>

#include <torch/torch.h>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/core/error.h"
#include "dtrainer/data/shard_reader.h"
#include "dtrainer/data/validate.h"
#include "dtrainer/train/component_configs.h"
#include "dtrainer/train/stage_transfer.h"

namespace fs = std::filesystem;

namespace dtrainer::train {

std::string resolve_checkpoint_path(const std::string& path) {
  std::error_code ec;
  if (fs::exists(fs::path(path) / "meta.json", ec) || fs::exists(fs::path(path) / "COMPLETE", ec)) return path;
  if (!fs::exists(path, ec)) throw Error(path, "no such run or checkpoint directory");
  if (fs::is_directory(fs::path(path) / "ckpt", ec)) {
    if (auto latest = ckpt::latest_checkpoint((fs::path(path) / "ckpt").string())) return *latest;
    throw Error(path, "a run directory without a complete checkpoint in ckpt/ (has it reached its first checkpoint?)");
  }
  throw Error(path, "neither a checkpoint (RUN/ckpt/step_N) nor a run directory (with ckpt/)");
}

CheckpointModel load_checkpoint_model(const std::string& path, ckpt::WeightsSource weights) {
  CheckpointModel m;
  m.checkpoint = resolve_checkpoint_path(path);
  m.run_dir = fs::path(m.checkpoint).parent_path().parent_path().string();  // RUN/ckpt/step_N -> RUN
  nlohmann::json meta;
  {
    const ckpt::CheckpointReader ck(m.checkpoint);
    meta = ck.meta();
  }
  if (!meta.contains("config_toml") || !meta["config_toml"].is_string())
    throw Error(m.checkpoint + "/meta.json",
                "records no configuration (saved by an older dtrainer): the model cannot be rebuilt");
  m.config = train_config_from_toml(meta["config_toml"].get<std::string>(), m.checkpoint + "/meta.json:config_toml");
  m.step = meta.value("step", int64_t{0});
  m.samples = meta.value("trainer", nlohmann::json::object()).value("samples", int64_t{0});
  // The data as the trainer planned it, synthetic sets inside the run directory.
  m.data = plan_data(m.config, m.run_dir);
  if (!m.data.found) throw Error(m.data.train_dirs.front(), "the run's training data is not there (moved or deleted?)");
  const auto shards = data::list_shards(m.data.train_dirs.front());
  if (shards.empty()) throw Error(m.data.train_dirs.front(), "no shards (*.h5) in the run's training data");
  {
    const data::ShardReader r(shards.front());
    m.header = r.header();
    m.image_shape = r.latent_shape();
  }
  const models::BackboneSpec spec = resolve_run_backbone(m.config, m.data.inputs);  // (a stage's grid included)
  torch::manual_seed(m.config.seed);
  m.model = models::build_backbone(spec);
  m.weights = ckpt::load_checkpoint_weights(m.checkpoint, weights, m.model->module());
  m.model->module().eval();
  // The run's own objective and padding, built as the trainer builds them (component_configs.h).
  m.objective = make_objective(m.config, m.data.inputs.latent_size);
  m.padding = text_padding_config(m.config);
  return m;
}

}  // namespace dtrainer::train
