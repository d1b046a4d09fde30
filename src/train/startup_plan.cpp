#include "dtrainer/train/startup_plan.h"

#include <filesystem>
#include <sstream>

#include "dtrainer/core/error.h"
#include "dtrainer/core/log.h"
#include "dtrainer/core/parse.h"
#include "dtrainer/data/synthesize.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/sharding_policy.h"
#include "dtrainer/train/memory_plan.h"

namespace fs = std::filesystem;

namespace dtrainer::train {
namespace {

constexpr int64_t kSyntheticEvalImages = 256;

}  // namespace

void synthesize_if_needed(const TrainConfig& c, const DataPlan& p, int rank, MPI_Comm comm) {
  bool synthetic = false;
  for (const auto& d : c.data) synthetic |= d == "synthetic:shapes";
  if (!synthetic) return;
  parallel::agree(comm, [&] {
    if (rank == 0) {
      auto make = [&](const std::string& dir, int64_t images, uint64_t seed) {
        if (fs::exists(fs::path(dir) / "eval_prompts.json")) return;  // written last: the set is whole
        data::SynthConfig s;
        s.kind = "shapes";
        s.out_dir = dir;
        s.images = images;
        s.images_per_shard = std::min<int64_t>(images, 2048);
        s.seed = seed;
        s.image_size = c.synthetic_image_size;
        s.text_dim = kSyntheticTextDim;
        s.force = true;
        log_info("synthesizing " + std::to_string(images) + " shapes images into " + dir);
        data::synthesize(s);
      };
      make(p.train_dirs.front(), c.synthetic_images, c.seed);
      if (c.eval_data.empty()) make(p.eval_dirs.front(), kSyntheticEvalImages, c.seed + 1000003);
    }
  });
}

StartupPlan make_startup_plan(const TrainConfig& c, const DataPlan& d, int world) {
  StartupPlan p;
  models::BackboneInputs inputs = d.found ? d.inputs : models::preset_inputs(c.model);
  if (!d.found)  // (a plan without the data: the shapes model_set states stand for the data's)
    for (const auto& kv : c.model_set) {
      const size_t eq = kv.find('=');
      const std::string key = kv.substr(0, eq), value = eq == std::string::npos ? "" : kv.substr(eq + 1);
      if (key == "sample_size") inputs.latent_size = parse_int("model_set", value);
      if (key == "in_channels") inputs.latent_channels = parse_int("model_set", value);
      if (key == "context_dim") inputs.text_dim = parse_int("model_set", value);
    }
  p.backbone = resolve_run_backbone(c, inputs);
  p.stage = stage_settings(c, p.backbone.family, models::to_string(p.backbone.transformer.family),
                           p.backbone.inputs.latent_size);
  p.stage_line = p.stage.describe(c);
  if (c.control_guidance != 1.0 && !p.backbone.control_conditioning())
    throw Error("control_guidance",
                "guides [S2]'s control conditions, which this model does not take: set "
                "control_conditioning (UNets) or use an mmdit_pp model");
  p.cost = models::backbone_cost(p.backbone);
  p.world = world;
  p.per_rank = c.global_batch / world;
  p.micro = c.micro_batch ? c.micro_batch : p.per_rank;
  p.accumulation = p.per_rank / p.micro;
  p.train_flops_per_sample = p.cost.training_flops();
  p.gflops_per_sample_s1 = 3.0 * 2.0 * static_cast<double>(p.cost.macs_linear_conv) / 1e9;
  return p;
}

std::string describe_run(const TrainConfig& c, const StartupPlan& p, const std::string& device,
                         const std::string& run_dir) {
  return models::backbone_summary(p.backbone) + "\ntraining " + std::to_string(c.steps) + " steps, global batch " +
         std::to_string(c.global_batch) + " on " + std::to_string(p.world) + " ranks (" + device + "), " +
         name_of(c.sharding) + "; run directory " + run_dir;
}

std::string describe_plan(const TrainConfig& c, const DataPlan& d, const StartupPlan& p, const std::string& device) {
  const double N = static_cast<double>(p.cost.params);
  const bool bf16 = c.compute_dtype == parallel::ComputeDtype::kBf16;
  const bool ckpt = c.activation_checkpointing || parallel::ShardingPolicy::of(c.sharding).recompute;
  const MemoryEstimate mem = estimate_memory(c, p.cost, p.world, p.micro);
  std::ostringstream o;
  o << "dtrainer plan\n"
    << "  model        " << models::backbone_summary(p.backbone) << "\n"
    << "  parameters   " << p.cost.params << " (" << N / 1e6 << " M)\n"
    << "  data         ";
  for (const auto& dir : d.train_dirs) o << dir << " ";
  o << (d.found ? "" : "(not found: shapes taken from the preset and model_set)") << "\n"
    << "  device       " << device << "\n"
    << "  batch        global " << c.global_batch << " = " << p.world << " ranks x micro-batch " << p.micro
    << " x accumulation " << p.accumulation << "\n"
    << "  sharding     " << name_of(c.sharding) << (ckpt ? " + activation checkpointing" : "") << ", compute in "
    << name_of(c.compute_dtype) << (bf16 ? " (fp32 masters)" : "")
    << (c.channels_last ? ", channels-last activations" : "") << "\n"
    << "  memory/rank  " << mem.describe() << "\n"
    << "  averages     " << describe_weight_averaging(c, p.cost.params) << "\n";
  if (!p.stage_line.empty()) {
    std::string lines = p.stage_line;
    for (size_t at = lines.find('\n'); at != std::string::npos; at = lines.find('\n', at + 1))
      lines.insert(at + 1, "               ");
    o << "  stage        " << lines << "\n";
  }
  o << "  FLOPs/step   " << static_cast<double>(p.train_flops_per_sample) * c.global_batch
    << " (fwd+bwd, all MACs x 2)\n"
    << "  steps        " << c.steps << " (warm-up " << c.warmup_steps << ", " << name_of(c.lr_schedule) << " lr "
    << c.lr << ")\n"
    << "  compute C    " << p.gflops_per_sample_s1 * c.global_batch * c.steps
    << " GFLOPs ([S1]: 3 x 2 x linear/conv MACs x samples)\n";
  return o.str();
}

}  // namespace dtrainer::train
