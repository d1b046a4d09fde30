// [S2]'s two-stage recipe end to end (train/stage_transfer.h), on the synthetic shapes: stage 1 at
// 16 px, stage 2 at 32 px from it, against the same model trained from scratch at 32 px, for a
// transformer (mmDiT++) and a UNet. Also what the stage records and refuses.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "train/dtrainer_runner.h"

namespace fs = std::filesystem;
using dtrainer::test::slurp;

namespace {

const char* kTransformer = " --model mmdit-pp-xl2 --model-set hidden_size=32 depth=2 num_heads=4";
const char* kUNet =
    " --model unet-tiny --model-set model_channels=16 channel_mult=1,2 transformer_depth=0,1 num_res_blocks=1 "
    "head_dim=8 norm_groups=4";

// A run on its own synthetic shapes at `size` px (every run's data and held-out set are the same for
// the same size and seed).
int run(const std::string& dir, int64_t size, const std::string& model, const std::string& args) {
  const std::string cmd = std::string(MPIEXEC) + " --allow-run-as-root --oversubscribe -n 2 " + DTRAINER_PATH + model +
                          " --synthetic-images 512 --synthetic-image-size " + std::to_string(size) +
                          " --global-batch 16 --log-every 1 --warmup-steps 2 --sample-count 2 --sample-steps 3"
                          " --align-prompts 8 --threads 1 --peak-tflops 1 --device cpu --run-dir " +
                          dir + " " + args + " > " + dir + ".log 2> " + dir + ".err";
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// A run's output: the plan (stdout), then the log (stderr). (Kept apart: mpirun forwards the two
// streams of a rank as their bytes arrive, so in one file a log line can land inside the plan.)
std::string output(const std::string& dir) { return slurp(dir + ".log") + "\n" + slurp(dir + ".err"); }

// The held-out loss the run recorded at `step`.
double eval_loss(const std::string& dir, int64_t step) {
  std::ifstream in(dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("eval_loss") && j.at("step") == step) return j.at("eval_loss").get<double>();
  }
  FAIL("no held-out loss at step " << step << " in " << dir);
  return 0;
}

}  // namespace

TEST_CASE("two stages, 16 px then 32 px: stage 2 starts far below a 32 px run from scratch") {
  const std::string root = dtrainer::test::scratch_dir("stages");
  for (const auto& [name, model] : {std::pair<std::string, std::string>{"mmdit_pp", kTransformer}, {"unet", kUNet}}) {
    const std::string s1 = root + "/" + name + "-16", s2 = root + "/" + name + "-32",
                      scratch = root + "/" + name + "-scratch";
    INFO(name << "\n" << output(s1) << output(s2));
    // (alignment and samples only where the test reads them: each costs sampling passes)
    const std::string quiet = " --align-every 0 --sample-count 0";
    REQUIRE(run(s1, 16, model, "--steps 60 --eval-every 0 --ckpt-every 0" + quiet) == 0);
    // Stage 2: the resolution scale S = 2 rescales the schedule (Eq. 3) and the guidance (Eq. 4).
    REQUIRE(run(s2, 32, model,
                "--steps 2 --eval-every 0 --eval-steps 1 --init-from " + s1 +
                    " --guidance-transfer --guidance-scale 1.5") == 0);
    // From scratch at 32 px, on the same rescaled schedule (the losses compare on one schedule).
    REQUIRE(run(scratch, 32, model, "--steps 2 --eval-every 0 --eval-steps 1 --noise-schedule-scale 2" + quiet) == 0);
    const double staged = eval_loss(s2, 1), fresh = eval_loss(scratch, 1);
    std::printf("%s: first held-out loss at 32 px: stage 2 %.4f, from scratch %.4f\n", name.c_str(), staged, fresh);
    CHECK(staged < 0.8 * fresh);
    // What the stage printed, recorded and sampled with.
    const std::string log = output(s2);
    CHECK_THAT(log, Catch::Contains("latent side 16 -> 32, resolution scale S = 2"));
    CHECK_THAT(log, Catch::Contains("[S2] Eq. 3 for s'/s = 2 (SNR / 4)"));
    CHECK_THAT(log, Catch::Contains("guidance 1.5 -> 2 ([S2] Eq. 4 at S = 2)"));
    const std::string toml = slurp(s2 + "/config.toml");
    CHECK_THAT(toml, Catch::Contains("init_from_size = 16") && Catch::Contains("init_from_scale = 1.0"));
    const auto manifest = nlohmann::json::parse(slurp(s2 + "/alignment/step_00000002/manifest.json"));
    CHECK(manifest.at("guidance").get<double>() == Approx(1 + 2 * (1.5 - 1)));  // the scale used: Eq. 4
    const auto meta = nlohmann::json::parse(slurp(s2 + "/ckpt/step_00000002/meta.json"));
    CHECK(meta.at("latent_size") == 32);
    CHECK(meta.at("resolution_scale").get<double>() == 2.0);
    if (name == "mmdit_pp") {
      CHECK_THAT(log, Catch::Contains("positional embeddings resample (auto for this family)"));
      // The reference point: extrapolated positions (reported, not asserted).
      const std::string ex = root + "/" + name + "-32-extrapolate";
      REQUIRE(run(ex, 32, model,
                  "--steps 2 --eval-every 0 --eval-steps 1 --pos-embed-transfer extrapolate --init-from " + s1 +
                      quiet) == 0);
      std::printf("%s: first held-out loss at 32 px: resample %.4f, extrapolate %.4f\n", name.c_str(), staged,
                  eval_loss(ex, 1));
    }
  }
}

TEST_CASE("a stage refuses what it cannot carry over, before anything is written") {
  const std::string root = dtrainer::test::scratch_dir("stage-errors");
  const std::string s1 = root + "/src";
  REQUIRE(run(s1, 16, kTransformer, "--steps 2 --eval-every 0 --align-every 0 --sample-count 0") == 0);
  auto refused = [&](const std::string& name, const std::string& model, const std::string& args) {
    const std::string dir = root + "/" + name;
    CHECK(run(dir, 32, model, "--steps 2 --init-from " + s1 + " " + args) == 2);
    CHECK_FALSE(fs::exists(dir));
    return output(dir);
  };
  // No positional-embedding rule for a grid that changes.
  CHECK_THAT(refused("no-rule", kTransformer, "--pos-embed-transfer none"),
             Catch::Contains("pos_embed_transfer") && Catch::Contains("latent side 32"));
  // Another width, another family: the first tensor that differs, named.
  CHECK_THAT(refused("width", " --model mmdit-pp-xl2 --model-set hidden_size=64 depth=2 num_heads=4", ""),
             Catch::Contains("x_embedder.proj.weight") && Catch::Contains("[32, 3, 2, 2]") &&
                 Catch::Contains("[64, 3, 2, 2]"));
  CHECK_THAT(refused("family", kUNet, ""), Catch::Contains("init_from") && Catch::Contains("conv_in.weight"));
  // A deeper model: the source's last block is SD3's pre-only one, so its text stream's adaLN is the
  // first tensor to differ.
  CHECK_THAT(refused("depth", " --model mmdit-pp-xl2 --model-set hidden_size=32 depth=3 num_heads=4", ""),
             Catch::Contains("joint_blocks.1.context_block.adaLN_modulation.1.weight") && Catch::Contains("depth"));
  // A source that does not exist; a rule for a UNet.
  CHECK(run(root + "/missing", 32, kTransformer, "--steps 2 --init-from " + root + "/nowhere") == 2);
  CHECK_THAT(output(root + "/missing"), Catch::Contains("init_from") && Catch::Contains("nowhere"));
  CHECK_THAT(refused("unet-rule", kUNet, "--pos-embed-transfer resample"), Catch::Contains("no positional embeddings"));
  // A weights file at another resolution through init_weights (which adapts nothing): pointed to init_from.
  const std::string weights = root + "/src.safetensors";
  REQUIRE(std::system(
              (std::string(DTCKPT_PATH) + " export " + s1 + " --out " + weights + " > /dev/null 2>&1").c_str()) == 0);
  CHECK(run(root + "/by-weights", 32, kTransformer, "--steps 2 --init-weights " + weights) == 2);
  CHECK_FALSE(fs::exists(root + "/by-weights"));
  CHECK_THAT(output(root + "/by-weights"), Catch::Contains("init_weights") && Catch::Contains("init_from"));
  // A stage resumed after its source has gone: the weights come from its own checkpoint, the source's
  // latent side from its recorded config.
  const std::string copy = root + "/src-copy", stage = root + "/stage";
  fs::copy(s1, copy, fs::copy_options::recursive);
  const std::string quiet = " --eval-every 0 --align-every 0 --sample-count 0 --init-from " + copy;
  REQUIRE(run(stage, 32, kTransformer, "--steps 2" + quiet) == 0);
  fs::remove_all(copy);
  REQUIRE(run(stage, 32, kTransformer, "--steps 4" + quiet) == 0);
  CHECK_THAT(output(stage), Catch::Contains("resumed from") && Catch::Contains("resolution scale S = 2"));
}
