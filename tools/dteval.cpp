// dteval — text-image alignment of a trained model on the shapes world (docs/EVAL.md).
//
//   mpirun -n R dteval alignment RUN_DIR|CHECKPOINT [--prompts N] [--images-per-prompt K]
//          [--guidance 1,3,5,7.5] [--weights auto|ema|params] [--weights-file W.safetensors]
//          [--steps S] [--seed S] [--out DIR]
//       samples K images for each of the first N held-out prompts (every rank its share, the same
//       images whatever R), writes them as PNGs in GenEval's layout with a TIFA image map, a
//       manifest and alignment.json, and prints the score, per category, with intervals and chance.
//   dteval answerer [--scenes N] [--json]
//       the answerer's validation: accuracy per category and confusion matrices on the world's own
//       renderings at 16, 32 and 64 px, and under added noise and blur.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/core/blas_kernels.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/parse.h"
#include "dtrainer/core/rng.h"
#include "dtrainer/data/shapes_scene.h"
#include "dtrainer/parallel/compute_threads.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/mpi_runtime.h"
#include "dtrainer/eval/alignment.h"
#include "dtrainer/eval/shapes_answerer.h"
#include "dtrainer/train/alignment_eval.h"
#include "dtrainer/train/latent_alignment.h"
#include "dtrainer/train/checkpoint_model.h"
#include "dtrainer/train/component_configs.h"
#include "dtrainer/train/stage_transfer.h"

using namespace dtrainer;
namespace fs = std::filesystem;

namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

std::string guidance_name(double g) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "guidance-%g", g);
  return buf;
}

void print_score(const std::string& title, const eval::AlignmentScore& s) {
  std::printf("%s\n  alignment  %s  [%s, %s]  (chance %s; %lld prompts, %lld images)\n", title.c_str(),
              fmt(s.overall.mean).c_str(), fmt(s.overall.lo).c_str(), fmt(s.overall.hi).c_str(),
              fmt(s.overall.chance).c_str(), static_cast<long long>(s.overall.prompts),
              static_cast<long long>(s.images));
  for (const auto& [c, v] : s.by_category)
    std::printf("  %-10s %s  [%s, %s]  (chance %s; %lld questions)\n", eval::to_string(c), fmt(v.mean).c_str(),
                fmt(v.lo).c_str(), fmt(v.hi).c_str(), fmt(v.chance).c_str(), static_cast<long long>(v.questions));
}

struct AlignmentArgs {
  std::string path, out, weights = "auto", weights_file, guidance = "";
  int64_t prompts = 0, images = 1, steps = 0, threads = 0, batch = 8;
  uint64_t seed = 0;
};

int run_alignment(parallel::MpiRuntime& rt, const AlignmentArgs& a) {
  parallel::set_compute_threads(a.threads, rt.local_world());
  train::CheckpointModel m;
  nlohmann::json phema;  // a post-hoc EMA's sigma_rel and time (from the weights file's metadata)
  std::vector<double> guidance;
  train::AlignmentPrompts prompts;
  std::optional<train::LatentAlignment> latent;
  fs::path out;
  // Everything that can be refused is checked on every rank before anything is written.
  parallel::agree(rt.comm(), [&] {
    m = train::load_checkpoint_model(a.path, ckpt::parse_weights_source("--weights", a.weights));
    if (!a.weights_file.empty()) {  // (a post-hoc EMA, or any export of this model: names and shapes must match)
      ckpt::load_weights(a.weights_file, m.model->module());
      const auto meta = ckpt::SafetensorsFile(a.weights_file).metadata();
      const auto w = meta.find("weights");
      m.weights = fs::path(a.weights_file).filename().string() + (w != meta.end() ? " (" + w->second + ")" : "");
      const auto sigma = meta.find("phema_sigma_rel"), at = meta.find("phema_at_images");
      if (sigma != meta.end() && at != meta.end())
        phema = {{"sigma_rel", std::stod(sigma->second)}, {"at_images", std::stoll(at->second)}};
    }
    if (m.header.latent_space != "pixels")  // (the data's encoders: its prompts encoded alike, samples decoded)
      latent = train::load_latent_alignment(m.data.train_dirs, m.config.vae);
    if (a.guidance.empty())
      guidance = {sampling_guidance_scale(m.config, m.data.inputs.latent_size)};  // ([S2] Eq. 4 for a stage)
    else {
      std::stringstream in(a.guidance);
      for (std::string item; std::getline(in, item, ',');) {
        char* end = nullptr;
        const double g = std::strtod(item.c_str(), &end);
        if (item.empty() || *end != '\0' || !std::isfinite(g) || g < 0)
          throw Error("--guidance", "'" + item + "' is not a guidance scale >= 0");
        guidance.push_back(g);
      }
    }
    const std::string file = train::find_eval_prompts(m.data.eval_dirs, m.data.train_dirs);
    prompts = train::load_alignment_prompts(file, m.header.text_dim, m.header.max_tokens, a.prompts, /*exactly=*/true,
                                            latent ? latent->encode_prompts : nullptr);
    char step[32];
    std::snprintf(step, sizeof step, "step_%08lld", static_cast<long long>(m.step));
    // (a weights file's score goes beside the checkpoints', named after the file)
    const std::string name = a.weights_file.empty() ? std::string(step) : fs::path(a.weights_file).stem().string();
    out = a.out.empty() ? fs::path(m.run_dir) / "alignment" / name : fs::path(a.out);
    std::error_code ec;
    if (fs::exists(out, ec)) throw Error(out.string(), "exists: choose another --out (nothing is overwritten)");
  });
  train::SamplerSetup s = train::sampler_setup(m.config, m.data);  // (the run's guidance law and controls)
  s.model = m.model.get();
  s.objective = m.objective.get();
  s.steps = a.steps ? a.steps : m.config.sample_steps;
  s.seed = a.seed;
  train::AlignmentOptions o;
  o.images_per_prompt = a.images;
  o.batch = a.batch;
  o.seed = a.seed;
  for (double g : guidance) {
    s.guidance = g;
    const fs::path dir = guidance.size() == 1 ? out : out / guidance_name(g);
    if (rt.rank() == 0 && guidance.size() > 1) fs::create_directories(out);
    const nlohmann::json manifest = {{"checkpoint", m.checkpoint},
                                     {"step", m.step},
                                     {"samples_seen", m.samples},
                                     {"weights", m.weights},
                                     {"weights_file", a.weights_file},
                                     {"phema", phema},
                                     {"guidance", g},
                                     {"sampler", m.config.target == diffusion::Target::kFlow ? "euler" : "ddim"},
                                     {"steps", s.steps},
                                     {"seed", a.seed},
                                     {"prompts", prompts.prompts.size()},
                                     {"prompts_file", prompts.source},
                                     {"images_per_prompt", a.images},
                                     {"ranks", rt.world()},
                                     {"image_shape", m.image_shape}};
    const auto t0 = std::chrono::steady_clock::now();
    const train::AlignmentRun r = train::evaluate_alignment(prompts, s, m.padding, m.image_shape, o, dir, manifest,
                                                            rt.comm(), latent ? latent->to_pixels : nullptr);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rt.rank() == 0) {
      print_score(m.checkpoint + " (step " + std::to_string(m.step) + ", " + m.weights + " weights), guidance " +
                      fmt(g) + ", " + std::to_string(s.steps) + " steps, " + fmt(secs) + " s: " + dir.string(),
                  r.score);
      std::fflush(stdout);
    }
  }
  return 0;
}

// ---- The answerer's validation ---------------------------------------------------------------

torch::Tensor blur3(const torch::Tensor& img) {
  const torch::Tensor k = torch::tensor({1.f, 2.f, 1.f}) / 4;
  const torch::Tensor w = (k.view({3, 1}) * k.view({1, 3})).expand({3, 1, 3, 3}).contiguous();
  return torch::conv2d(torch::replication_pad2d(img.unsqueeze(0), {1, 1, 1, 1}), w, torch::Tensor(),
                       torch::IntArrayRef{1}, torch::IntArrayRef{0}, torch::IntArrayRef{1}, 3)
      .squeeze(0);
}

int run_answerer(int64_t scenes, bool json) {
  const auto& colors = data::shape_colors();
  const auto& kinds = data::shape_kinds();
  nlohmann::json report = nlohmann::json::object();
  for (int64_t size : {16, 32, 64}) {
    // Confusion on clean renderings: colour (6x6), shape (3x3), presence (2x2), over every cell.
    std::vector<std::vector<int64_t>> color(6, std::vector<int64_t>(7, 0)), shape(3, std::vector<int64_t>(4, 0)),
        presence(2, std::vector<int64_t>(2, 0));
    StreamRng rng(static_cast<uint64_t>(size) * 7919);
    for (int64_t i = 0; i < scenes; ++i) {
      const data::ShapesScene sc = data::random_scene(rng);
      const eval::SceneDetection d = eval::detect_shapes(data::render_scene(sc, size));
      std::vector<int64_t> at(4, -1);
      for (size_t k = 0; k < sc.objects.size(); ++k) at[sc.objects[k].cell] = static_cast<int64_t>(k);
      for (int64_t c = 0; c < 4; ++c) {
        presence[at[c] >= 0][d.cells[c].present]++;
        if (at[c] < 0) continue;
        const auto& o = sc.objects[at[c]];
        color[o.color][d.cells[c].present ? d.cells[c].color : 6]++;
        shape[o.kind][d.cells[c].present ? d.cells[c].shape : 3]++;
      }
    }
    nlohmann::json r = {{"color_confusion", color}, {"shape_confusion", shape}, {"presence_confusion", presence}};
    // Accuracy per category under noise (sigma in [-1, 1] units) and blur.
    nlohmann::json sweep = nlohmann::json::array();
    for (double sigma : {0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7})
      for (bool blurred : {false, true}) {
        StreamRng srng(static_cast<uint64_t>(size) * 31 + 5);
        std::vector<eval::PromptResult> results;
        for (int64_t i = 0; i < scenes; ++i) {
          const data::ShapesScene sc = data::random_scene(srng);
          torch::manual_seed(static_cast<uint64_t>(i) + 17);
          torch::Tensor img = data::render_scene(sc, size);
          if (blurred) img = blur3(img);
          img = (img + sigma * torch::randn_like(img)).clamp(-1, 1);
          eval::PromptResult pr;
          pr.prompt = i;
          pr.questions = eval::questions_for_prompt(data::scene_ground_truth(sc), "scene");
          const eval::SceneDetection d = eval::detect_shapes(img);
          std::vector<bool> row;
          for (const auto& q : pr.questions) row.push_back(eval::answer_question(q, d) == q.answer);
          pr.correct.push_back(row);
          results.push_back(std::move(pr));
        }
        const eval::AlignmentScore s = eval::score_alignment(results, 0);
        nlohmann::json row = {{"sigma", sigma}, {"blur", blurred}, {"overall", s.overall.mean}};
        for (const auto& [c, v] : s.by_category) row[eval::to_string(c)] = v.mean;
        sweep.push_back(row);
      }
    r["noise"] = sweep;
    report[std::to_string(size)] = r;
    if (!json) {
      std::printf("%lld px, %lld scenes: colour confusion (rows: drawn, columns: read; last: none)\n",
                  static_cast<long long>(size), static_cast<long long>(scenes));
      for (int a = 0; a < 6; ++a) {
        std::printf("  %-8s", colors[a].c_str());
        for (int b = 0; b < 7; ++b) std::printf(" %5lld", static_cast<long long>(color[a][b]));
        std::printf("\n");
      }
      std::printf("  shape confusion\n");
      for (int a = 0; a < 3; ++a) {
        std::printf("  %-8s", kinds[a].c_str());
        for (int b = 0; b < 4; ++b) std::printf(" %5lld", static_cast<long long>(shape[a][b]));
        std::printf("\n");
      }
      std::printf(
          "  presence: empty read empty %lld, empty read present %lld, present read empty %lld, present read present "
          "%lld\n",
          static_cast<long long>(presence[0][0]), static_cast<long long>(presence[0][1]),
          static_cast<long long>(presence[1][0]), static_cast<long long>(presence[1][1]));
      std::printf("  noise sigma / blur: overall presence shape color position count relation\n");
      for (const auto& row : sweep) {
        std::printf("  %4.2f %-5s", row["sigma"].get<double>(), row["blur"].get<bool>() ? "blur" : "-");
        for (const char* k : {"overall", "presence", "shape", "color", "position", "count", "relation"})
          std::printf(" %s", row.contains(k) ? fmt(row[k].get<double>()).c_str() : "  -  ");
        std::printf("\n");
      }
    }
  }
  if (json) std::cout << report.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  select_native_blas_kernels();  // (before any BLAS call)
  return parallel::run_ranks(&argc, &argv, [&](parallel::MpiRuntime& rt) -> int {
    CLI::App app{"dteval: text-image alignment of trained models on the shapes world (docs/EVAL.md)"};
    app.require_subcommand(1);
    AlignmentArgs a;
    CLI::App* al = app.add_subcommand(
        "alignment", "sample held-out prompts, write the images for the public evaluators, score them");
    al->add_option("PATH", a.path, "run directory (its newest checkpoint) or checkpoint (RUN/ckpt/step_N)")->required();
    al->add_option("--prompts", a.prompts, "the first N prompts of eval_prompts.json (0: all)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    al->add_option("--images-per-prompt", a.images, "images sampled per prompt")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    al->add_option("--guidance", a.guidance,
                   "guidance scales, comma-separated (a sweep; default: the run's guidance_scale)");
    al->add_option("--weights", a.weights, "auto (EMA when kept) | ema | params")
        ->capture_default_str()
        ->check(CLI::IsMember(ckpt::name_table(ckpt::WeightsSource{}).names()));
    al->add_option("--weights-file", a.weights_file,
                   "score these weights instead (a .safetensors of this run's model: dtckpt phema's post-hoc EMA, "
                   "dtckpt export); the output defaults to RUN/alignment/<file name>")
        ->check(CLI::ExistingFile);
    al->add_option("--steps", a.steps, "sampler steps (0: the run's sample_steps)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    al->add_option("--seed", a.seed, "seed of the starting noise and the bootstrap")->capture_default_str();
    al->add_option("--out", a.out, "output directory (default RUN/alignment/step_N); must not exist");
    al->add_option("--threads", a.threads, "compute threads per rank (0: cores / ranks on the node)")
        ->capture_default_str();
    al->add_option("--batch", a.batch,
                   "images per forward pass (the images depend on it and --seed, never on the rank count)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    int64_t scenes = 300;
    bool json = false;
    CLI::App* an = app.add_subcommand(
        "answerer", "validate the answerer: confusion matrices and accuracy under noise, at 16/32/64 px");
    an->add_option("--scenes", scenes, "random scenes per size")->capture_default_str()->check(CLI::PositiveNumber);
    an->add_flag("--json", json, "print JSON");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      std::ostringstream quiet;
      const int code = rt.rank() == 0 ? app.exit(e) : app.exit(e, quiet, quiet);
      return code == 0 ? 0 : 2;
    }
    try {
      if (*an) return rt.rank() == 0 ? run_answerer(scenes, json) : 0;
      return run_alignment(rt, a);
    } catch (const CollectiveError& e) {
      if (rt.rank() == 0)
        std::fprintf(stderr, "dteval: error: %s\n", e.failures() == rt.world() ? e.detail().c_str() : e.what());
      return 2;
    }
  });
}
