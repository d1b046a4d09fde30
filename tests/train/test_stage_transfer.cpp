// [S2]'s stages (train/stage_transfer.h): Eq. 3 in the objective the trainer builds, Eq. 4 in the
// sampling guidance, the positional-embedding rules and their errors, each against its closed form
// or an independent computation.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>

#include "dtrainer/core/error.h"
#include "dtrainer/models/embeddings.h"
#include "dtrainer/train/component_configs.h"
#include "dtrainer/train/stage_transfer.h"
#include "dtrainer/train/train_config.h"
#include "error_text.h"

using namespace dtrainer;
using namespace dtrainer::train;
using dtrainer::test::error_of;

namespace {
// A stage from a 16-latent source trained from scratch.
TrainConfig stage(int64_t source_size = 16, double source_scale = 1) {
  TrainConfig c;
  c.init_from = "runs/source";
  c.init_from_size = source_size;
  c.init_from_scale = source_scale;
  return c;
}

// Eq. 3 as [S2] writes it, from the unscaled abar.
double eq3(double abar, double s, double s_to) { return s * s * abar / (s_to * s_to + abar * (s * s - s_to * s_to)); }

}  // namespace

TEST_CASE("the objective a stage trains with follows [S2] Eq. 3 at every timestep") {
  TrainConfig scratch;
  const auto base = make_objective(scratch, 32);
  for (const auto& [source, target, s_to] :
       {std::tuple<int64_t, int64_t, double>{16, 32, 2.0}, {32, 64, 2.0}, {16, 64, 4.0}, {32, 16, 0.5}}) {
    const auto o = make_objective(stage(source), target);
    REQUIRE(o->schedule().size() == base->schedule().size());
    for (int64_t t = 0; t < o->schedule().size(); ++t) {
      const double a = base->schedule().abar(t);
      CHECK(o->schedule().abar(t) == Approx(eq3(a, 1.0, s_to)).epsilon(1e-12));
      CHECK(o->schedule().snr(t) == Approx(base->schedule().snr(t) / (s_to * s_to)).epsilon(1e-9));
    }
  }
  // A chained stage: S is the source's own scale times the side ratio (512 -> 1024 after 256 -> 512).
  const auto chained = make_objective(stage(32, 2.0), 64);
  for (int64_t t : {0, 250, 999}) CHECK(chained->schedule().abar(t) == Approx(eq3(base->schedule().abar(t), 1, 4)));
  // noise_schedule_scale = 1 turns it off; a number sets it without a stage.
  TrainConfig off = stage();
  off.noise_schedule_scale = "1";
  CHECK(make_objective(off, 32)->schedule().abar(500) == base->schedule().abar(500));
  TrainConfig fixed;
  fixed.noise_schedule_scale = "3";
  CHECK(make_objective(fixed, 32)->schedule().abar(500) == Approx(eq3(base->schedule().abar(500), 1, 3)));
  // Without init_from, auto is the schedule as designed.
  CHECK(make_objective(scratch, 64)->schedule().abar(500) == base->schedule().abar(500));
  TrainConfig bad;
  bad.noise_schedule_scale = "twice";
  CHECK_THAT(error_of([&] { validate_train_config(bad, 1); }), Catch::Contains("noise_schedule_scale"));
  bad.noise_schedule_scale = "-2";
  CHECK_THAT(error_of([&] { validate_train_config(bad, 1); }), Catch::Contains("noise_schedule_scale"));
}

TEST_CASE("guidance_transfer samples with [S2] Eq. 4's scale and says both") {
  TrainConfig c = stage(16);
  c.guidance_scale = 1.5;
  CHECK(sampling_guidance_scale(c, 32) == 1.5);  // (off unless asked)
  c.guidance_transfer = true;
  CHECK(sampling_guidance_scale(c, 32) == Approx(1 + 2 * (1.5 - 1)));  // 1.5 at 256 -> 2.0 at 512
  CHECK(sampling_guidance_scale(c, 64) == Approx(1 + 4 * 0.5));
  const StageSettings s = stage_settings(c, "unet", "", 32);
  CHECK(s.guidance == Approx(2.0));
  CHECK_THAT(s.describe(c), Catch::Contains("guidance 1.5 -> 2") && Catch::Contains("Eq. 4"));
  TrainConfig alone;
  alone.guidance_transfer = true;
  CHECK_THAT(error_of([&] { stage_settings(alone, "unet", "", 32); }), Catch::Contains("guidance_transfer"));
}

TEST_CASE("positional embeddings follow the stage's rule, by family unless set, and a missing rule is an error") {
  TrainConfig c = stage(16);
  auto rule = [&](const std::string& family) { return stage_settings(c, "transformer", family, 32); };
  CHECK(rule("mmdit_pp").pos_rule == PosEmbedTransfer::kResample);  // [S2]'s mmDiT++
  CHECK(rule("dit").pos_rule == PosEmbedTransfer::kInterpolate);    // the baselines
  CHECK(rule("mmdit").model_overrides == std::vector<std::string>{"pos_embed_scale=2", "pos_embed_grid=interpolated"});
  c.pos_embed_transfer = PosEmbedTransfer::kExtrapolate;
  CHECK(rule("mmdit_pp").model_overrides ==
        std::vector<std::string>{"pos_embed_scale=1", "pos_embed_grid=extrapolate"});
  c.pos_embed_transfer = PosEmbedTransfer::kNone;
  const std::string e = error_of([&] { rule("pixart"); });
  CHECK_THAT(e, Catch::Contains("pos_embed_transfer") && Catch::Contains("16") && Catch::Contains("32"));
  // An MDT's learned grid does not carry over (refused, not silently mismatched).
  c.pos_embed_transfer = PosEmbedTransfer::kAuto;
  CHECK_THAT(error_of([&] { rule("mdt"); }), Catch::Contains("mdt") && Catch::Contains("latent side 32"));
  c.pos_embed_transfer = PosEmbedTransfer::kNone;
  // Same resolution: nothing to adapt, whatever the rule.
  CHECK(stage_settings(c, "transformer", "pixart", 16).model_overrides.empty());
  // A UNet has no grid: an explicit rule is an error, auto is nothing.
  c.pos_embed_transfer = PosEmbedTransfer::kResample;
  CHECK_THAT(error_of([&] { stage_settings(c, "unet", "", 32); }), Catch::Contains("no positional embeddings"));
  // A hand-set grid contradicting the rule.
  c.model_set = {"pos_embed_scale=3"};
  CHECK_THAT(error_of([&] { rule("mmdit_pp"); }), Catch::Contains("model_set") && Catch::Contains("pos_embed_scale=3"));
  // A rule without a stage.
  TrainConfig scratch;
  scratch.pos_embed_transfer = PosEmbedTransfer::kInterpolate;
  CHECK_THAT(error_of([&] { stage_settings(scratch, "transformer", "dit", 32); }), Catch::Contains("init_from"));
}

TEST_CASE("the interpolated grid is the base grid's table, bilinearly interpolated corner to corner") {
  using models::PosEmbedGrid;
  const int64_t dim = 16, n = 8;
  for (const double scale : {2.0, 4.0}) {
    const int64_t base = static_cast<int64_t>(n / scale);
    const torch::Tensor table = models::sincos_pos_embed_2d(dim, base, base, 1.0, PosEmbedGrid::kExtrapolate);
    const torch::Tensor as_image = table.view({1, base, base, dim}).permute({0, 3, 1, 2}).to(torch::kFloat64);
    const torch::Tensor expect =
        torch::nn::functional::interpolate(as_image, torch::nn::functional::InterpolateFuncOptions()
                                                         .size(std::vector<int64_t>{n, n})
                                                         .mode(torch::kBilinear)
                                                         .align_corners(true))
            .permute({0, 2, 3, 1})
            .reshape({n * n, dim});
    const torch::Tensor got = models::sincos_pos_embed_2d(dim, n, n, scale, PosEmbedGrid::kInterpolated);
    CHECK(torch::allclose(got.to(torch::kFloat64), expect, 1e-5, 1e-6));
    // ...and unlike the resampled grid (sin-cos evaluated at fractional positions), it is not exact.
    const torch::Tensor resampled = models::sincos_pos_embed_2d(dim, n, n, scale, PosEmbedGrid::kResampled);
    CHECK_FALSE(torch::allclose(got, resampled, 1e-3, 1e-3));
  }
  // At scale 1 the interpolated grid is the plain one.
  CHECK(torch::allclose(models::sincos_pos_embed_2d(dim, n, n, 1.0, PosEmbedGrid::kInterpolated),
                        models::sincos_pos_embed_2d(dim, n, n, 1.0, PosEmbedGrid::kExtrapolate), 1e-6, 1e-6));
}

TEST_CASE("a stage's source is checked: its latent side must be known, and an explicit one must agree") {
  TrainConfig c;
  c.init_from = "x";
  StageSource s;
  s.path = "x.safetensors";
  CHECK_THAT(error_of([&] { record_stage_source(c, s); }), Catch::Contains("init_from_size"));
  s.latent_size = 16;
  s.resolution_scale = 2;
  record_stage_source(c, s);
  CHECK(c.init_from_size == 16);
  CHECK(c.init_from_scale == 2);
  TrainConfig d;
  d.init_from = "x";
  d.init_from_size = 8;
  CHECK_THAT(error_of([&] { record_stage_source(d, s); }), Catch::Contains("init_from_size") && Catch::Contains("16"));
  CHECK_THAT(error_of([&] { read_stage_source("/nonexistent/run"); }), Catch::Contains("init_from"));
  TrainConfig both = stage();
  both.init_weights = "w.safetensors";
  CHECK_THAT(error_of([&] { validate_train_config(both, 1); }), Catch::Contains("init_weights"));
}
