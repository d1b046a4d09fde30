#include "dtrainer/parallel/host_collectives.h"
#include "dtrainer/train/alignment_eval.h"

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/remove_tree.h"
#include "dtrainer/data/png_image.h"
#include "dtrainer/data/toy_text_encoder.h"
#include "dtrainer/diffusion/sampler.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/watchdog.h"
#include "dtrainer/eval/questions.h"
#include "dtrainer/eval/sample_layout.h"
#include "dtrainer/eval/shapes_answerer.h"

namespace fs = std::filesystem;

namespace dtrainer::train {

AlignmentPrompts load_alignment_prompts(
    const std::string& path, int64_t text_dim, int64_t max_tokens, int64_t count, bool exactly,
    const std::function<std::vector<torch::Tensor>(const std::vector<std::string>&)>& encode) {
  const nlohmann::json file = eval::read_eval_prompts(path);
  const auto& all = file["prompts"];
  const int64_t available = static_cast<int64_t>(all.size());
  if (exactly && count > available)
    throw Error(path, "holds " + std::to_string(available) + " prompts, and " + std::to_string(count) +
                          " were asked for (ask for at most " + std::to_string(available) +
                          ", or 0 for all; dtdata synth --eval-prompts N makes more)");
  const int64_t n = count > 0 ? std::min<int64_t>(count, available) : available;
  AlignmentPrompts p;
  p.source = path;
  const data::ToyTextEncoder encoder(text_dim, max_tokens);  // (the same table as every synthesized dataset)
  for (int64_t i = 0; i < n; ++i) {
    const std::string where = path + ": prompt " + std::to_string(i);
    const nlohmann::json& entry = all[static_cast<size_t>(i)];
    if (!entry.is_object() || !entry.contains("prompt") || !entry["prompt"].is_string())
      throw Error(where, "has no 'prompt' text");
    p.questions.push_back(eval::questions_for_prompt(entry, where));
    if (!encode) p.tokens.push_back(encoder.encode(entry["prompt"].get<std::string>()));
    p.prompts.push_back(entry);
  }
  if (encode) {  // (the data's own encoder: all prompts at once)
    std::vector<std::string> texts;
    for (const auto& entry : p.prompts) texts.push_back(entry["prompt"].get<std::string>());
    p.tokens = encode(texts);
    for (const auto& t : p.tokens)
      if (t.dim() != 2 || t.size(1) != text_dim)
        throw Error(path, "the data's text encoder gives " + std::to_string(t.size(-1)) +
                              "-wide token states, the model reads " + std::to_string(text_dim));
  }
  return p;
}

std::string find_eval_prompts(const std::vector<std::string>& eval_dirs, const std::vector<std::string>& train_dirs) {
  std::vector<std::string> dirs = eval_dirs;
  dirs.insert(dirs.end(), train_dirs.begin(), train_dirs.end());
  std::error_code ec;
  for (const auto& d : dirs)
    if (fs::exists(fs::path(d) / "eval_prompts.json", ec)) return (fs::path(d) / "eval_prompts.json").string();
  throw Error(
      "alignment",
      "no eval_prompts.json in the run's data (" + (dirs.empty() ? std::string("none") : dirs.front()) +
          "): the alignment score needs prompts of the shapes world with their structure (dtdata synth --kind shapes)");
}

AlignmentRun evaluate_alignment(const AlignmentPrompts& prompts, const SamplerSetup& sampler,
                                const diffusion::TextPaddingConfig& padding, const std::vector<int64_t>& image_shape,
                                const AlignmentOptions& o, const fs::path& out, const nlohmann::json& manifest,
                                MPI_Comm comm, const std::function<torch::Tensor(const torch::Tensor&)>& to_pixels) {
  int rank = 0, world = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &world);
  const int64_t P = static_cast<int64_t>(prompts.prompts.size()), K = o.images_per_prompt,
                B = std::max<int64_t>(1, o.batch);
  if (P == 0 || K < 1)
    throw Error("alignment",
                "nothing to sample (" + std::to_string(P) + " prompts x " + std::to_string(K) + " images)");
  if (image_shape.size() != 3 || (!to_pixels && image_shape[0] != 3))
    throw Error("alignment",
                "needs RGB pixels [3, H, W]; this data is " + c10::str(c10::IntArrayRef(image_shape)) +
                    " (latents: their VAE decodes them, named by the data's encode.json or the run's vae)");
  const fs::path partial = out.string() + ".partial";
  // 1. Rank 0 makes the (new) directory and writes each prompt's metadata.
  parallel::agree(comm, [&] {
    if (rank != 0) return;
    std::error_code ec;
    if (fs::exists(out, ec)) throw Error(out.string(), "exists: choose another --out (nothing is overwritten)");
    remove_tree(partial);
    for (int64_t p = 0; p < P; ++p) {
      fs::create_directories(partial / eval::prompt_dir_name(p) / "samples");
      write_file_atomic(partial / eval::prompt_dir_name(p) / "metadata.jsonl",
                        eval::geneval_metadata(prompts.prompts[p]).dump() + "\n");
    }
  });
  auto cleanup = [&] {
    if (rank == 0) try_remove_tree(partial);
  };
  // 2. Every rank samples its chunks and writes their images. The ranks go in rounds of `world`
  // chunks, and a rank without a chunk in the last round samples chunk 0 again and discards it:
  // under zero3 every forward pass gathers parameters collectively, so every rank must make the
  // same number of passes (and it costs no time: that rank would wait for the others anyway).
  // The PNGs are written after the last pass, so a rank whose write fails (a full disk) does not
  // leave the others waiting in a gather it never joins.
  try {
    parallel::agree(comm, [&] {
      std::vector<std::pair<int64_t, torch::Tensor>> sampled;  // (id, image)
      const int64_t total = P * K, chunks = (total + B - 1) / B, rounds = (chunks + world - 1) / world;
      for (int64_t round = 0; round < rounds; ++round) {
        const int64_t mine = round * world + rank;
        const bool spare = mine >= chunks;
        const int64_t chunk = spare ? 0 : mine;
        const int64_t first = chunk * B, n = std::min(B, total - first);
        std::vector<torch::Tensor> starts, texts;
        std::vector<int64_t> ids;
        for (int64_t id = first; id < first + n; ++id) {
          starts.push_back(diffusion::initial_noise(image_shape, o.seed, id));
          texts.push_back(prompts.tokens[static_cast<size_t>(id / K)]);
          ids.push_back(id);
        }
        const diffusion::PaddedText text = diffusion::pad_text(texts, padding, ids, 0);
        torch::Tensor images = sample_images(sampler, torch::stack(starts), text.tokens, text.mask);
        if (spare) continue;
        if (to_pixels) {
          images = to_pixels(images.to(torch::kCPU));
          if (images.dim() != 4 || images.size(1) != 3)
            throw Error("alignment", "the VAE decodes to " + c10::str(images.sizes()) + ", not RGB images");
        }
        for (int64_t i = 0; i < n; ++i) sampled.emplace_back(ids[i], images[i]);
      }
      for (const auto& [id, image] : sampled)
        data::write_png((partial / eval::image_relative_path(id / K, id % K)).string(), image);
    });
  } catch (const CollectiveError&) {
    cleanup();
    throw;
  }
  // 3. Rank 0 reads every image back, answers the questions on it and scores; publishes.
  AlignmentRun run;
  run.dir = out;
  std::string score_text;
  try {
    parallel::agree(comm, [&] {
      if (rank != 0) return;
      std::vector<eval::PromptResult> results;
      nlohmann::json rows = nlohmann::json::array(), tifa = nlohmann::json::object(),
                     tifa_questions = nlohmann::json::array();
      for (int64_t p = 0; p < P; ++p) {
        eval::PromptResult r;
        r.prompt = p;
        r.questions = prompts.questions[static_cast<size_t>(p)];
        nlohmann::json images = nlohmann::json::array();
        for (int64_t k = 0; k < K; ++k) {
          const std::string rel = eval::image_relative_path(p, k);
          const eval::SceneDetection d = eval::detect_shapes(data::read_png((partial / rel).string()));
          std::vector<bool> row;
          nlohmann::json answers = nlohmann::json::array();
          int64_t right = 0;
          for (const auto& q : r.questions) {
            const std::string a = eval::answer_question(q, d);
            row.push_back(a == q.answer);
            right += a == q.answer;
            answers.push_back(a);
          }
          images.push_back({{"path", rel}, {"correct", right}, {"answers", answers}});
          r.correct.push_back(std::move(row));
          if (k == 0) tifa[std::to_string(p)] = rel;
        }
        nlohmann::json qs = nlohmann::json::array();
        for (const auto& q : r.questions)
          qs.push_back({{"category", eval::to_string(q.category)}, {"question", q.text}, {"answer", q.answer}});
        const std::string caption = prompts.prompts[static_cast<size_t>(p)]["prompt"].get<std::string>();
        rows.push_back({{"prompt", p}, {"text", caption}, {"questions", qs}, {"images", images}});
        for (auto& q : eval::tifa_question_answers(p, caption, r.questions)) tifa_questions.push_back(std::move(q));
        results.push_back(std::move(r));
      }
      run.score = eval::score_alignment(results, o.bootstrap, o.seed);
      for (size_t p = 0; p < rows.size(); ++p) rows[p]["score"] = run.score.per_prompt[p];
      nlohmann::json alignment = run.score.to_json();
      alignment["prompts_file"] = prompts.source;
      alignment["per_prompt"] = rows;
      write_file_atomic(partial / "alignment.json", alignment.dump(2) + "\n");
      write_file_atomic(partial / "tifa_images.json", tifa.dump(2) + "\n");
      write_file_atomic(partial / "tifa_questions.json", tifa_questions.dump(2) + "\n");
      write_file_atomic(partial / "manifest.json", manifest.dump(2) + "\n");
      fs::rename(partial, out);
      fsync_path(out.parent_path().empty() ? fs::path(".") : out.parent_path());
      score_text = run.score.to_json().dump();
    });
  } catch (const CollectiveError&) {
    cleanup();
    throw;
  }
  // Every rank learns the score (the trainer's records, a tool's exit).
  score_text = parallel::broadcast_host(comm, score_text);
  if (rank != 0) {
    const nlohmann::json j = nlohmann::json::parse(score_text);
    run.score.overall.mean = j["score"].get<double>();
    run.score.overall.lo = j["interval"][0].get<double>();
    run.score.overall.hi = j["interval"][1].get<double>();
    run.score.overall.chance = j["chance"].get<double>();
    for (eval::Category c : eval::all_categories())
      if (j["by_category"].contains(eval::to_string(c))) {
        const auto& s = j["by_category"][eval::to_string(c)];
        run.score.by_category[c] = {s["score"].get<double>(),       s["interval"][0].get<double>(),
                                    s["interval"][1].get<double>(), s["chance"].get<double>(),
                                    s["prompts"].get<int64_t>(),    s["questions"].get<int64_t>()};
      }
    run.score.images = j["images"].get<int64_t>();
  }
  return run;
}

}  // namespace dtrainer::train
