// dteval alignment end to end: a trained run's checkpoint sampled on 1 and 2 ranks gives
// bitwise-identical PNGs and the same score, in the layout the public evaluators read; the
// trainer's align_every records at step 0 and the end, which fitlaws fits; bad inputs refused
// with nothing written.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "run_process.h"
#include "train/dtrainer_runner.h"

using namespace dtrainer;
namespace fs = std::filesystem;

namespace {

test::ProcessResult dteval(int ranks, const std::string& args) {
  return test::run_process(std::string(MPIEXEC) + " --allow-run-as-root --oversubscribe -n " + std::to_string(ranks) +
                           " -x OMP_NUM_THREADS=1 " + DTEVAL_PATH + " " + args + " --threads 1");
}

// A short run on the shapes data: checkpoints and alignment at 4 and 8, alignment also at step 0.
const std::string& trained() {
  static const std::string dir = [] {
    const std::string d = test::scratch_dir("dteval-run");
    REQUIRE(test::run(1, "--steps 8 --ckpt-every 4 --align-every 4 --keep-ckpts 3 --run-dir " + d, d + ".log") == 0);
    return d;
  }();
  return dir;
}

std::string all_png_bytes(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().extension() == ".png") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::string bytes;
  for (const auto& f : files) bytes += fs::relative(f, dir).string() + ":" + test::slurp(f);
  return bytes;
}

}  // namespace

TEST_CASE(
    "dteval alignment: 1 and 2 ranks write bitwise-identical PNGs and the same score, in GenEval's and TIFA's layout") {
  const std::string run = trained();
  const std::string a = test::scratch_dir("dteval-1") + "/out", b = test::scratch_dir("dteval-2") + "/out";
  const auto r1 = dteval(1, "alignment " + run + " --images-per-prompt 2 --steps 3 --out " + a);
  INFO(r1.out);
  REQUIRE(r1.status == 0);
  const auto r2 = dteval(2, "alignment " + run + " --images-per-prompt 2 --steps 3 --out " + b);
  INFO(r2.out);
  REQUIRE(r2.status == 0);
  CHECK_THAT(r1.out, Catch::Contains("alignment ") && Catch::Contains("chance") && Catch::Contains("presence"));
  CHECK(all_png_bytes(a) == all_png_bytes(b));
  CHECK_FALSE(all_png_bytes(a).empty());
  const auto s1 = nlohmann::json::parse(test::slurp(a + "/alignment.json")),
             s2 = nlohmann::json::parse(test::slurp(b + "/alignment.json"));
  CHECK(s1["score"] == s2["score"]);
  CHECK(s1["by_category"] == s2["by_category"]);
  // The layout: 4 prompts (the test data's eval_prompts.json) x 2 images, metadata per prompt, the TIFA map, the
  // manifest.
  for (int p = 0; p < 4; ++p) {
    char dir[16];
    std::snprintf(dir, sizeof dir, "%05d", p);
    CHECK(fs::exists(a + "/" + dir + "/samples/0000.png"));
    CHECK(fs::exists(a + "/" + dir + "/samples/0001.png"));
    const auto meta = nlohmann::json::parse(test::slurp(a + "/" + dir + "/metadata.jsonl"));
    CHECK(meta.contains("prompt"));
    CHECK(meta.contains("objects"));
  }
  const auto tifa = nlohmann::json::parse(test::slurp(a + "/tifa_images.json"));
  CHECK(tifa["0"] == "00000/samples/0000.png");
  // TIFA's question file: every question of every prompt, keyed like the image map; GenEval's tags.
  const auto tifa_qa = nlohmann::json::parse(test::slurp(a + "/tifa_questions.json"));
  size_t questions = 0;
  for (const auto& row : s1["per_prompt"]) questions += row["questions"].size();
  CHECK(tifa_qa.size() == questions);
  CHECK(tifa.contains(tifa_qa[0]["id"].get<std::string>()));
  for (int p = 0; p < 4; ++p) {
    char dir[16];
    std::snprintf(dir, sizeof dir, "%05d", p);
    const auto meta = nlohmann::json::parse(test::slurp(a + "/" + dir + "/metadata.jsonl"));
    CHECK(meta.contains("tag"));
    CHECK(meta["include"].size() >= 1);
  }
  const auto manifest = nlohmann::json::parse(test::slurp(a + "/manifest.json"));
  CHECK(manifest["step"] == 8);
  CHECK(manifest["weights"] == "ema");
  CHECK(manifest["images_per_prompt"] == 2);
  CHECK(manifest["ranks"] == 1);
  CHECK(s1["images"] == 8);
  CHECK(s1["per_prompt"].size() == 4);
  CHECK(s1["per_prompt"][0]["images"][1]["path"] == "00000/samples/0001.png");
  // Every number comes from the images: the answers recorded are a detection of the written PNG.
  CHECK(s1["per_prompt"][0]["images"][0]["answers"].size() == s1["per_prompt"][0]["questions"].size());
  // A guidance sweep: one directory per scale.
  const std::string sweep = test::scratch_dir("dteval-sweep") + "/out";
  const auto r3 =
      dteval(1, "alignment " + run + "/ckpt/step_00000004 --prompts 2 --steps 2 --guidance 1,5 --out " + sweep);
  INFO(r3.out);
  REQUIRE(r3.status == 0);
  CHECK(fs::exists(sweep + "/guidance-1/alignment.json"));
  CHECK(fs::exists(sweep + "/guidance-5/alignment.json"));
  CHECK(nlohmann::json::parse(test::slurp(sweep + "/guidance-5/manifest.json"))["step"] == 4);
}

TEST_CASE(
    "training records the alignment at step 0, every align_every steps and the end, and fitlaws fits it against "
    "compute") {
  const std::string run = trained();
  std::vector<nlohmann::json> records;
  std::ifstream in(run + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("alignment")) records.push_back(j);
  }
  REQUIRE(records.size() == 3);
  CHECK(records[0]["step"] == 0);
  CHECK(records[1]["step"] == 4);
  CHECK(records[2]["step"] == 8);
  CHECK(records[0]["compute_gflops"] == 0);
  CHECK(records[2]["compute_gflops"].get<double>() == Approx(2 * records[1]["compute_gflops"].get<double>()));
  for (const auto& r : records) {
    INFO(r.dump());
    for (const char* k : {"alignment_interval", "alignment_chance", "alignment_by_category", "params", "compute_gflops",
                          "image_noun_pairs", "samples"})
      CHECK(r.contains(k));
    CHECK(r["alignment"].get<double>() >= 0);
    CHECK(r["alignment"].get<double>() <= 1);
    CHECK(fs::exists(r["alignment_dir"].get<std::string>() + "/alignment.json"));
  }
  // Two more runs of other widths (alignment at 0 and 6): every evaluation after step 0 is a point.
  std::string runs = run;
  for (const char* width : {"8", "24"}) {
    const std::string d = test::scratch_dir(std::string("dteval-width-") + width);
    REQUIRE(test::run(1, "--steps 6 --run-dir " + d, d + ".log",
                      std::string(" --model-set model_channels=") + width +
                          " channel_mult=1,2 transformer_depth=0,1 num_res_blocks=1 head_dim=8 norm_groups=4") == 0);
    runs += " " + d;
  }
  const auto fit = test::run_process(std::string(FITLAWS_PATH) + " power --runs " + runs +
                                     " --metric alignment --x C --y alignment --frontier none --pick all --json");
  INFO(fit.out);
  CHECK(fit.status == 0);
  CHECK_THAT(fit.out, Catch::Contains("\"points\": 4"));
  CHECK_THAT(fit.out, Catch::Contains("before any training compute"));
}

TEST_CASE("dteval refuses bad input by name and writes nothing") {
  const std::string run = trained();
  const std::string root = test::scratch_dir("dteval-bad");
  // A run directory without checkpoints.
  fs::create_directories(root + "/empty/ckpt");
  auto r = dteval(1, "alignment " + root + "/empty --out " + root + "/o1");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("without a complete checkpoint"));
  CHECK_FALSE(fs::exists(root + "/o1"));
  // An output directory that exists: untouched.
  fs::create_directories(root + "/taken");
  std::ofstream(root + "/taken/keep") << "mine";
  r = dteval(1, "alignment " + run + " --out " + root + "/taken");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("exists: choose another --out"));
  CHECK(test::slurp(root + "/taken/keep") == "mine");
  // More prompts than the held-out set has (4): refused, not silently fewer.
  r = dteval(1, "alignment " + run + " --prompts 5 --out " + root + "/o4");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("eval_prompts.json: holds 4 prompts, and 5 were asked for"));
  CHECK_FALSE(fs::exists(root + "/o4"));
  // Prompts whose structure is missing: a run evaluated against a copy of the held-out set without objects.
  const std::string eval_copy = root + "/eval-broken";
  fs::copy(test::data_root() + "/eval", eval_copy, fs::copy_options::recursive);
  auto prompts = nlohmann::json::parse(test::slurp(eval_copy + "/eval_prompts.json"));
  prompts["prompts"][1].erase("objects");
  std::ofstream(eval_copy + "/eval_prompts.json", std::ios::trunc) << prompts.dump();
  const std::string broken = root + "/broken-run";
  std::string cmd = test::command(1, "--steps 2 --align-every 0 --run-dir " + broken);
  cmd.replace(cmd.find(test::data_root() + "/eval"), (test::data_root() + "/eval").size(), eval_copy);
  REQUIRE(std::system((cmd + " > " + broken + ".log 2>&1").c_str()) == 0);
  r = dteval(1, "alignment " + broken + " --out " + root + "/o2");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("eval_prompts.json: prompt 1") && Catch::Contains("no 'objects' list"));
  CHECK_FALSE(fs::exists(root + "/o2"));
  // Latent data: no decoder yet.
  const std::string latents = root + "/latents";
  REQUIRE(test::run_process(std::string(DTDATA_PATH) + " synth --kind latents --out " + latents +
                            " --images 16 --latent-size 8 --text-dim 32 --max-tokens 16")
              .status == 0);
  const std::string lrun = root + "/latent-run";
  std::string lcmd = test::command(1, "--steps 2 --run-dir " + lrun);
  lcmd.replace(lcmd.find(test::data_root() + "/train"), (test::data_root() + "/train").size(), latents);
  lcmd.replace(lcmd.find(test::data_root() + "/eval"), (test::data_root() + "/eval").size(), latents);
  REQUIRE(std::system((lcmd + " > " + lrun + ".log 2>&1").c_str()) == 0);
  r = dteval(1, "alignment " + lrun + " --out " + root + "/o3");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("no encode.json"));  // (random latents: no encoders to read prompts, no VAE)
  CHECK_FALSE(fs::exists(root + "/o3"));
  // ...and the trainer refuses align_every on latents at start-up.
  CHECK(std::system(
            (lcmd + " --align-every 2 --run-dir " + root + "/latent-run-2 > " + root + "/l2.log 2>&1").c_str()) != 0);
  CHECK_THAT(test::slurp(root + "/l2.log"), Catch::Contains("align_every") && Catch::Contains("encode.json"));
  CHECK_FALSE(fs::exists(root + "/latent-run-2"));
}
