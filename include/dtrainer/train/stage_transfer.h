#pragma once
// [S2]'s training stages: a run that starts from another run's weights at another resolution
// (low-resolution pre-training, then high-resolution fine-tuning) and adapts what [S2] adapts:
//   - the positional embeddings of a transformer (pos_embed_transfer: resample | interpolate |
//     extrapolate; models/embeddings.h has the grids),
//   - the noise schedule (noise_schedule_scale, [S2] Eq. 3: SNR' = SNR / S^2 at resolution scale S),
//   - the sampling guidance scale (guidance_transfer, [S2] Eq. 4: lam' = 1 + S (lam - 1)).
// S is the run's resolution scale relative to the base resolution its recipe was tuned at: the
// source's own scale (1 for a run trained from scratch) times the side ratio of this run's latents
// to the source's. Everything here is a pure function of the configuration once the source's
// latent side and scale are known (init_from_size, init_from_scale: read from the source at
// start-up and recorded in config.toml), so dteval and a resume rebuild the same model and schedule.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "dtrainer/core/name_table.h"
#include "dtrainer/models/backbone_spec.h"

namespace dtrainer::train {

struct TrainConfig;

enum class PosEmbedTransfer {
  kAuto,         // by family, as [S2]'s comparison: mmDiT++ resamples, the other transformers interpolate
  kResample,     // [S2]'s mmDiT++: sin-cos evaluated on linspace(0, n / S, n), the grid keeps its extent
  kInterpolate,  // the baselines: the base grid's table bilinearly interpolated to the new grid
  kExtrapolate,  // arange(n): the new grid's outer positions were never trained (the reference point)
  kNone,         // no rule: a transformer that changes resolution is refused
};
const NameTable<PosEmbedTransfer>& name_table(PosEmbedTransfer);  // auto | resample | interpolate | extrapolate | none

// What init_from names, opened: a checkpoint (RUN_DIR means its newest complete one) or a
// safetensors weights file, with what the source records about itself.
struct StageSource {
  std::string path;  // the checkpoint directory or the weights file
  bool checkpoint = false;
  std::string model;            // the source run's preset ("" when the file does not say)
  int64_t latent_size = 0;      // its latent side (0: unknown)
  double resolution_scale = 1;  // its own S (1: trained from scratch)
  int64_t step = 0;             // where it stood
};
// Throws Error naming `field` and the path: missing, not a checkpoint / weights file, incomplete.
StageSource read_stage_source(const std::string& init_from, const std::string& field = "init_from");

// The latent side and resolution scale a run records about itself (checkpoint meta.json and the
// weights files dtckpt exports carry them), from its configuration and latent side.
double run_resolution_scale(const TrainConfig& c, int64_t latent_size);

// Fills init_from_size / init_from_scale from `source` where the configuration leaves them 0 (a
// configuration that sets them keeps its values; they are checked against the source). Throws
// Error naming the field when the source's resolution cannot be told.
void record_stage_source(TrainConfig& c, const StageSource& source);

// What dtrainer does at start-up: with init_from set and init_from_size / init_from_scale 0, reads
// them from the source (record_stage_source). A run being resumed whose source has gone since takes
// them from its own newest checkpoint's recorded configuration (the weights come from that
// checkpoint anyway). Set values are checked against the source. A dry run may plan a stage whose
// source does not exist yet when init_from_size says its latent side (init_from_scale 0 = 1).
// Throws Error naming init_from or init_from_size.
void resolve_stage_source(TrainConfig& c, const std::filesystem::path& run_dir, bool dry_run = false);

// Whether the source's tensors are exactly the parameters of `spec` (names and shapes, from the
// family's analytic table: nothing is built), before anything is written. Throws Error naming
// init_from and the first tensor that differs (another family, width or depth).
void check_source_fits(const std::string& init_from, const models::BackboneSpec& spec);

// The stage, worked out for a model of family `family` ("unet" | "transformer", with the
// transformer family name in `transformer_family`) trained at latent side `latent_size`.
struct StageSettings {
  bool from_source = false;                             // init_from is set
  int64_t latent_size = 0;                              // this run's latent side
  double side_ratio = 1;                                // this run's latent side / the source's
  double resolution_scale = 1;                          // S
  PosEmbedTransfer pos_rule = PosEmbedTransfer::kNone;  // resolved (none for UNets and unchanged grids)
  std::vector<std::string> model_overrides;             // pos_embed_scale=..., pos_embed_grid=...
  double noise_scale = 1;  // Eq. 3's s'/s applied to the schedule (1: the schedule as designed)
  double guidance = 0;     // the sampling guidance scale after Eq. 4 (= guidance_scale without transfer)
  // The plan's lines: "from RUN (...): latent side 16 -> 32, resolution scale S = 2; ...", then the
  // positional embeddings, the noise schedule and the guidance, one line each. Empty when nothing applies.
  std::string describe(const TrainConfig& c) const;
};
// Throws Error naming the option: a transformer whose grid changes with pos_embed_transfer = none,
// a rule for a UNet, a model_set pos_embed override that contradicts the rule, a non-number scale.
StageSettings stage_settings(const TrainConfig& c, const std::string& family, const std::string& transformer_family,
                             int64_t latent_size);

// The backbone this configuration trains on data of shape `inputs`: the preset, model_set, and the
// stage's positional-embedding overrides (startup plan, dteval, dtckpt: one resolution).
models::BackboneSpec resolve_run_backbone(const TrainConfig& c, const models::BackboneInputs& inputs);

// The guidance scale samples use: guidance_scale, or [S2] Eq. 4's for the stage's S with guidance_transfer.
double sampling_guidance_scale(const TrainConfig& c, int64_t latent_size);

// noise_schedule_scale as a number: "auto" -> S of a stage (1 without init_from); throws naming it.
double noise_schedule_scale_value(const TrainConfig& c, double resolution_scale);

}  // namespace dtrainer::train
