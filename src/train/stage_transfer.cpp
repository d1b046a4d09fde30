#include "dtrainer/train/stage_transfer.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include <c10/util/ArrayRef.h>
#include <c10/util/StringUtil.h>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/core/error.h"
#include "dtrainer/diffusion/schedule.h"
#include "dtrainer/models/transformer_cost.h"
#include "dtrainer/models/unet_cost.h"
#include "dtrainer/train/checkpoint_model.h"
#include "dtrainer/train/data_plan.h"
#include "dtrainer/train/train_config.h"

namespace fs = std::filesystem;

namespace dtrainer::train {

const NameTable<PosEmbedTransfer>& name_table(PosEmbedTransfer) {
  static const NameTable<PosEmbedTransfer> t{{"auto", PosEmbedTransfer::kAuto},
                                             {"resample", PosEmbedTransfer::kResample},
                                             {"interpolate", PosEmbedTransfer::kInterpolate},
                                             {"extrapolate", PosEmbedTransfer::kExtrapolate},
                                             {"none", PosEmbedTransfer::kNone}};
  return t;
}

namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

double meta_number(const nlohmann::json& j, const char* key, double fallback) {
  if (!j.contains(key)) return fallback;
  if (j[key].is_number()) return j[key].get<double>();
  if (j[key].is_string()) {
    char* end = nullptr;
    const std::string text = j[key].get<std::string>();
    const double v = std::strtod(text.c_str(), &end);
    if (end == text.c_str() + text.size() && !text.empty()) return v;
  }
  return fallback;
}

// What a source records about itself: `m` is its meta.json or its weights file's metadata (with
// config_toml when recorded). Checkpoints of older dtrainers have no latent_size: the data the
// run trained on, planned as the trainer planned it, says it (when it is still there).
void read_recorded(StageSource& s, const nlohmann::json& m, const std::string& where, const fs::path& run_dir) {
  s.latent_size = static_cast<int64_t>(meta_number(m, "latent_size", 0));
  s.resolution_scale = meta_number(m, "resolution_scale", 1);
  if (!m.contains("config_toml") || !m["config_toml"].is_string()) return;
  const TrainConfig src = train_config_from_toml(m["config_toml"].get<std::string>(), where);
  s.model = src.model;
  if (s.latent_size == 0 && !run_dir.empty()) {
    try {
      const DataPlan d = plan_data(src, run_dir);
      if (d.found) s.latent_size = d.inputs.latent_size;
    } catch (const Error&) {
      // (the source's data moved: the caller asks for init_from_size)
    }
  }
  if (s.latent_size > 0 && !m.contains("resolution_scale"))
    s.resolution_scale = run_resolution_scale(src, s.latent_size);
}

}  // namespace

StageSource read_stage_source(const std::string& init_from, const std::string& field) {
  StageSource s;
  std::error_code ec;
  if (!fs::exists(init_from, ec)) throw Error(field, init_from + ": no such run, checkpoint or weights file");
  if (fs::is_regular_file(init_from, ec)) {
    s.path = init_from;
    nlohmann::json m = nlohmann::json::object();
    const ckpt::SafetensorsFile file(init_from);
    for (const auto& [k, v] : file.metadata()) m[k] = v;
    s.step = static_cast<int64_t>(meta_number(m, "step", 0));
    const fs::path run_dir =
        m.contains("checkpoint") ? fs::path(m["checkpoint"].get<std::string>()).parent_path().parent_path() : "";
    read_recorded(s, m, init_from + ":__metadata__.config_toml", run_dir);
    return s;
  }
  try {
    s.path = resolve_checkpoint_path(init_from);
  } catch (const Error& e) {
    throw Error(field, e.what());
  }
  s.checkpoint = true;
  const ckpt::CheckpointReader ck(s.path);
  s.step = ck.step();
  read_recorded(s, ck.meta(), s.path + "/meta.json:config_toml", fs::path(s.path).parent_path().parent_path());
  return s;
}

double run_resolution_scale(const TrainConfig& c, int64_t latent_size) {
  if (c.init_from.empty() || c.init_from_size <= 0 || latent_size <= 0) return 1.0;
  const double source_scale = c.init_from_scale > 0 ? c.init_from_scale : 1.0;
  return source_scale * static_cast<double>(latent_size) / static_cast<double>(c.init_from_size);
}

void record_stage_source(TrainConfig& c, const StageSource& s) {
  if (!s.checkpoint && c.init_from_weights != ckpt::WeightsSource::kAuto)
    throw Error("init_from_weights", std::string(name_of(c.init_from_weights)) + " picks a checkpoint's weights, but " +
                                         s.path + " is a weights file (it holds one set): leave it auto");
  if (c.init_from_size == 0) {
    if (s.latent_size <= 0)
      throw Error("init_from_size",
                  s.path +
                      " does not record its latent side (an older or foreign file, and its run's data is not "
                      "there): set init_from_size to the latent side it was trained at");
    c.init_from_size = s.latent_size;
  } else if (s.latent_size > 0 && s.latent_size != c.init_from_size) {
    throw Error("init_from_size", std::to_string(c.init_from_size) + " is set, but " + s.path +
                                      " was trained at latent side " + std::to_string(s.latent_size) +
                                      " (leave it 0 to take the source's)");
  }
  if (c.init_from_scale == 0)
    c.init_from_scale = s.resolution_scale > 0 ? s.resolution_scale : 1.0;
  else if (s.latent_size > 0 && std::abs(c.init_from_scale - s.resolution_scale) > 1e-9 * c.init_from_scale)
    throw Error("init_from_scale", number(c.init_from_scale) + " is set, but " + s.path + " records resolution scale " +
                                       number(s.resolution_scale) + " (leave it 0 to take the source's)");
}

void resolve_stage_source(TrainConfig& c, const fs::path& run_dir, bool dry_run) {
  if (c.init_from.empty()) return;
  std::error_code ec;
  if (!fs::exists(c.init_from, ec) && dry_run && c.init_from_size > 0) {
    if (c.init_from_scale == 0) c.init_from_scale = 1;  // (a plan made before the source exists: as set)
    return;
  }
  if (!fs::exists(c.init_from, ec) && c.resume != "none") {
    if (const auto own = ckpt::latest_checkpoint((run_dir / "ckpt").string())) {
      const ckpt::CheckpointReader ck(*own);
      if (ck.meta().contains("config_toml") && ck.meta()["config_toml"].is_string()) {
        const TrainConfig was = train_config_from_toml(ck.meta()["config_toml"].get<std::string>(), *own);
        if (was.init_from == c.init_from && was.init_from_size > 0) {
          if (c.init_from_size == 0) c.init_from_size = was.init_from_size;
          if (c.init_from_scale == 0) c.init_from_scale = was.init_from_scale;
          return;
        }
      }
    }
  }
  record_stage_source(c, read_stage_source(c.init_from));
}

void check_source_fits(const std::string& init_from, const models::BackboneSpec& spec) {
  std::map<std::string, std::vector<int64_t>> source;  // name -> shape, in the source's order below
  std::vector<std::string> order;
  std::string where;
  std::error_code ec;
  if (fs::is_regular_file(init_from, ec)) {
    where = init_from;
    const ckpt::SafetensorsFile file(init_from);
    for (const auto& e : file.entries()) {
      source[e.name] = e.shape;
      order.push_back(e.name);
    }
  } else {
    where = resolve_checkpoint_path(init_from);
    const ckpt::CheckpointReader ck(where);
    for (const auto& u : ck.layout())
      for (const auto& t : u.tensors) {
        source[t.name] = t.shape;
        order.push_back(t.name);
      }
  }
  const std::vector<models::ParamEntry> model =
      spec.family == "unet"
          ? models::count_unet(spec.unet, {spec.inputs.latent_size, spec.inputs.latent_size, spec.inputs.text_len})
                .params
          : models::count_transformer(spec.transformer, spec.inputs.text_len).params;
  const auto shown = [](const std::vector<int64_t>& v) { return c10::str(c10::IntArrayRef(v)); };
  std::map<std::string, std::vector<int64_t>> wanted;
  for (const auto& p : model) wanted[p.name] = p.shape;
  for (const auto& p : model) {
    const auto it = source.find(p.name);
    if (it == source.end())
      throw Error("init_from", where + " has no tensor '" + p.name + "' of this model (" +
                                   models::backbone_summary(spec) + "): a model of another family or depth?");
    if (it->second != p.shape)
      throw Error("init_from", where + ": tensor '" + p.name + "' is " + shown(it->second) + " there, " +
                                   shown(p.shape) + " in this model (another width or depth?)");
  }
  for (const auto& name : order)
    if (!wanted.count(name))
      throw Error("init_from", where + ": tensor '" + name + "' is not a parameter of this model (another family?)");
}

double noise_schedule_scale_value(const TrainConfig& c, double resolution_scale) {
  if (c.noise_schedule_scale == "auto") return c.init_from.empty() ? 1.0 : resolution_scale;
  char* end = nullptr;
  const double v = std::strtod(c.noise_schedule_scale.c_str(), &end);
  if (c.noise_schedule_scale.empty() || end != c.noise_schedule_scale.c_str() + c.noise_schedule_scale.size() ||
      !std::isfinite(v) || !(v > 0))
    throw Error("noise_schedule_scale",
                "auto or a positive number (the resolution scale s'/s of Eq. 3; 1: the schedule as designed), got '" +
                    c.noise_schedule_scale + "'");
  return v;
}

double sampling_guidance_scale(const TrainConfig& c, int64_t latent_size) {
  return c.guidance_transfer
             ? diffusion::guidance_scale_for_resolution(c.guidance_scale, run_resolution_scale(c, latent_size))
             : c.guidance_scale;
}

StageSettings stage_settings(const TrainConfig& c, const std::string& family, const std::string& transformer_family,
                             int64_t latent_size) {
  StageSettings s;
  s.from_source = !c.init_from.empty();
  const bool explicit_rule =
      c.pos_embed_transfer != PosEmbedTransfer::kAuto && c.pos_embed_transfer != PosEmbedTransfer::kNone;
  if (!s.from_source && explicit_rule)
    throw Error("pos_embed_transfer", std::string(name_of(c.pos_embed_transfer)) +
                                          " adapts a source's grid: it needs init_from (a model_set pos_embed_scale / "
                                          "pos_embed_grid sets a grid by hand)");
  if (!s.from_source && c.guidance_transfer)
    throw Error("guidance_transfer", "scales the guidance for a stage's resolution scale S: it needs init_from");
  if (s.from_source && c.init_from_size > 0 && latent_size > 0)
    s.side_ratio = static_cast<double>(latent_size) / static_cast<double>(c.init_from_size);
  s.latent_size = latent_size;
  s.resolution_scale = run_resolution_scale(c, latent_size);
  s.noise_scale = noise_schedule_scale_value(c, s.resolution_scale);
  s.guidance = sampling_guidance_scale(c, latent_size);
  if (family != "transformer") {
    if (explicit_rule)
      throw Error("pos_embed_transfer", "a " + family +
                                            " has no positional embeddings (its convolutions carry to any "
                                            "resolution): leave it auto");
    return s;
  }
  if (!s.from_source || s.resolution_scale == 1.0) return s;
  if (transformer_family == "mdt" && s.side_ratio != 1.0)
    throw Error("init_from",
                "an mdt learns its positional embeddings and relative position bias for its token grid: "
                "dtrainer cannot carry them to latent side " +
                    std::to_string(latent_size) + " from " + std::to_string(c.init_from_size) + " yet");
  PosEmbedTransfer rule = c.pos_embed_transfer;
  if (rule == PosEmbedTransfer::kAuto)
    rule = transformer_family == "mmdit_pp" ? PosEmbedTransfer::kResample : PosEmbedTransfer::kInterpolate;
  if (rule == PosEmbedTransfer::kNone)
    throw Error("pos_embed_transfer",
                "this " + transformer_family + " is trained at latent side " + std::to_string(latent_size) +
                    ", its source at " + std::to_string(c.init_from_size) + " (resolution scale " +
                    number(s.resolution_scale) +
                    "): say how its positional embeddings carry over (resample, interpolate or extrapolate; auto "
                    "picks by family)");
  for (const auto& kv : c.model_set)
    if (kv.rfind("pos_embed_scale=", 0) == 0 || kv.rfind("pos_embed_grid=", 0) == 0)
      throw Error("model_set", "'" + kv + "' contradicts pos_embed_transfer = " + name_of(rule) +
                                   ", which sets the grid of a stage: remove one of them");
  s.pos_rule = rule;
  switch (rule) {
    case PosEmbedTransfer::kResample:
      s.model_overrides = {"pos_embed_scale=" + number(s.resolution_scale), "pos_embed_grid=resampled"};
      break;
    case PosEmbedTransfer::kInterpolate:
      s.model_overrides = {"pos_embed_scale=" + number(s.resolution_scale), "pos_embed_grid=interpolated"};
      break;
    default: s.model_overrides = {"pos_embed_scale=1", "pos_embed_grid=extrapolate"}; break;
  }
  return s;
}

std::string StageSettings::describe(const TrainConfig& c) const {
  std::string out;
  if (from_source) {
    std::error_code ec;
    const std::string which = fs::is_regular_file(c.init_from, ec)
                                  ? "a weights file"
                                  : std::string(name_of(c.init_from_weights)) + " weights";
    out = "from " + c.init_from + " (" + which + "): latent side " + std::to_string(c.init_from_size) + " -> " +
          std::to_string(latent_size) + ", resolution scale S = " + number(resolution_scale) +
          "; optimizer state fresh, averages start at the loaded weights";
    if (pos_rule != PosEmbedTransfer::kNone)
      out += "\npositional embeddings " + std::string(name_of(pos_rule)) +
             (c.pos_embed_transfer == PosEmbedTransfer::kAuto ? " (auto for this family)" : "") + ": " +
             model_overrides[0] + ", " + model_overrides[1];
  }
  if (noise_scale != 1.0)
    out += std::string(out.empty() ? "" : "\n") +
           "noise schedule rescaled by [S2] Eq. 3 for s'/s = " + number(noise_scale) + " (SNR / " +
           number(noise_scale * noise_scale) + "), in training and sampling";
  if (c.guidance_transfer)
    out += std::string(out.empty() ? "" : "\n") + "guidance " + number(c.guidance_scale) + " -> " + number(guidance) +
           " ([S2] Eq. 4 at S = " + number(resolution_scale) + ")";
  return out;
}

models::BackboneSpec resolve_run_backbone(const TrainConfig& c, const models::BackboneInputs& inputs) {
  models::BackboneSpec spec = models::resolve_backbone(c.model, c.model_set, inputs, c.control_conditioning);
  const StageSettings s =
      stage_settings(c, spec.family, models::to_string(spec.transformer.family), spec.inputs.latent_size);
  if (s.model_overrides.empty()) return spec;
  std::vector<std::string> overrides = c.model_set;
  overrides.insert(overrides.end(), s.model_overrides.begin(), s.model_overrides.end());
  return models::resolve_backbone(c.model, overrides, inputs, c.control_conditioning);
}

}  // namespace dtrainer::train
