#include "dtrainer/train/resume_plan.h"

#include <map>
#include <vector>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/ckpt/validate_checkpoint.h"
#include "dtrainer/core/error.h"
#include "dtrainer/train/job_file.h"
#include "dtrainer/train/train_config.h"

namespace fs = std::filesystem;

namespace dtrainer::train {
namespace {

// Fields a resumed run must keep as they were: others (lr, steps, intervals, sharding, ranks,
// device, ...) may change between the parts of a run.
const char* const kKeptFields[] = {"model", "model_set", "control_conditioning", "global_batch", "seed", "data_weights",
                                   "synthetic_images", "synthetic_image_size", "max_tokens",
                                   // a stage's model and schedule ([S2]: train/stage_transfer.h)
                                   "pos_embed_transfer", "noise_schedule_scale", "init_from_size", "init_from_scale"};

std::map<std::string, std::vector<std::string>> fields_of(const std::string& toml, const std::string& source) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& item : parse_job_toml(toml, source)) out[item.key] = item.values;
  return out;
}

std::string shown(const std::vector<std::string>& v) {
  if (v.size() == 1) return v[0];
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
  return out + "]";
}

void check_same_run(const TrainConfig& c, const nlohmann::json& meta, const std::string& dir) {
  if (!meta.contains("config_toml") || !meta["config_toml"].is_string()) return;  // (older checkpoints)
  std::map<std::string, std::vector<std::string>> saved;
  try {
    saved = fields_of(meta["config_toml"].get<std::string>(), dir + "/meta.json:config_toml");
  } catch (const Error&) {
    return;  // a config a newer or older dtrainer wrote: the loader and the model check the rest
  }
  const auto now = fields_of(train_config_toml(c), "this run's configuration");
  const bool synthetic = c.data.size() == 1 && c.data[0] == "synthetic:shapes";
  for (const char* key : kKeptFields) {
    if (!synthetic && std::string(key).rfind("synthetic_", 0) == 0) continue;
    const auto a = saved.find(key);
    const auto b = now.find(key);
    const std::vector<std::string> was = a == saved.end() ? std::vector<std::string>{} : a->second;
    const std::vector<std::string> is = b == now.end() ? std::vector<std::string>{} : b->second;
    if (a == saved.end() && std::string(key) != "model_set" && std::string(key) != "data_weights")
      continue;  // (not recorded then)
    if (was != is)
      throw Error(key, "the checkpoint " + dir + " was saved with " + key + " = " + shown(was) + ", this run has " +
                           shown(is) + ": a resume keeps it (set it back), or start a new run with another --run-dir");
  }
}

}  // namespace

std::optional<std::string> newest_sound_checkpoint(const fs::path& root, int64_t before_step) {
  const auto all = ckpt::complete_checkpoints(root.string());
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->first >= before_step) continue;
    try {
      const ckpt::CheckpointReader ck(it->second);
      if (ckpt::validate_checkpoint(ck, /*values=*/true).empty()) return it->second;
    } catch (const Error&) {
    }
  }
  return std::nullopt;
}

std::string previous_checkpoint_hint(const fs::path& root, int64_t before_step) {
  const auto sound = newest_sound_checkpoint(root, before_step);
  if (!sound) return " No older checkpoint of this run is sound.";
  return " The previous checkpoint " + *sound + " is sound: resume it with --resume " + *sound +
         " (the steps after it are trained again).";
}

ResumePlan plan_resume(const TrainConfig& c, const fs::path& run_dir) {
  ResumePlan p;
  const fs::path root = run_dir / "ckpt";
  const auto all = ckpt::complete_checkpoints(root.string());
  if (c.resume == "none") {
    if (!all.empty())
      throw Error("resume", "none, but " + root.string() +
                                " holds checkpoints: resume them (--resume auto) or choose another --run-dir");
    return p;
  }
  std::string dir;
  if (c.resume == "auto") {
    if (all.empty()) return p;
    dir = all.back().second;
  } else {
    dir = c.resume;
    if (!fs::exists(fs::path(dir) / "COMPLETE")) throw Error("resume", dir + " is not a complete checkpoint directory");
  }
  try {
    const ckpt::CheckpointReader ck(dir);
    ck.units();
    if (ck.meta().contains("layout")) ck.layout();
    p.meta = ck.meta();
    p.step = ck.step();
  } catch (const Error& e) {
    const int64_t step = all.empty() ? 0 : all.back().first;
    throw Error("resume", std::string("cannot read the checkpoint: ") + e.what() + "." +
                              (c.resume == "auto" ? previous_checkpoint_hint(root, step) : ""));
  }
  if (p.step < 0) throw Error(dir + "/meta.json", "has no step");
  check_same_run(c, p.meta, dir);
  p.checkpoint = dir;
  return p;
}

}  // namespace dtrainer::train
