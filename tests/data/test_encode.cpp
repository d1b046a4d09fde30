// dtdata encode as a user runs it, with random-weight encoders: a folder of PNGs (one of them broken)
// becomes shards that dtdata validate accepts, 1 and 2 ranks write identical shards, a killed run
// resumes without redoing its finished shards, and bad input is a clear error. Also: JPEG reading
// and the noun heuristic.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <jpeglib.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data_test_util.h"
#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/data/caption_nouns.h"
#include "dtrainer/data/image_file.h"
#include "dtrainer/data/png_image.h"
#include "dtrainer/data/shard_reader.h"
#include "dtrainer/models/clip_text_model.h"
#include "run_process.h"
#include "spawned_run.h"

using namespace dtrainer;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = DT_FIXTURES;

// vae/ (the small diffusers fixture, f = 4), text_encoder/ (a random CLIP text model over the
// fixture tokenizer's 6514 tokens, 77 positions), tokenizer/.
const std::string& encoders() {
  static const std::string dir = [] {
    const std::string d = test::scratch_dir("encoders");
    fs::create_directories(d + "/vae");
    for (const char* f : {"config.json", "diffusion_pytorch_model.safetensors"})
      fs::copy_file(kFixtures + "/autoencoder_kl/" + f, d + "/vae/" + f);
    fs::create_directories(d + "/tokenizer");
    for (const char* f : {"vocab.json", "merges.txt"})
      fs::copy_file(kFixtures + "/clip_tokenizer/" + f, d + "/tokenizer/" + f);
    models::CLIPTextConfig c;
    c.vocab_size = 6514, c.hidden_size = 32, c.intermediate_size = 64, c.num_hidden_layers = 2;
    c.num_attention_heads = 4, c.eos_token_id = 6513;
    torch::manual_seed(11);
    models::CLIPTextModel m(c);
    fs::create_directories(d + "/text_encoder");
    write_file_atomic(d + "/text_encoder/config.json", nlohmann::json{{"architectures", {"CLIPTextModel"}},
                                                                      {"vocab_size", c.vocab_size},
                                                                      {"hidden_size", c.hidden_size},
                                                                      {"intermediate_size", c.intermediate_size},
                                                                      {"num_hidden_layers", c.num_hidden_layers},
                                                                      {"num_attention_heads", c.num_attention_heads},
                                                                      {"max_position_embeddings", 77},
                                                                      {"hidden_act", "quick_gelu"},
                                                                      {"eos_token_id", c.eos_token_id}}
                                                           .dump());
    std::vector<ckpt::SafetensorsEntry> entries;
    for (const auto& p : m->named_parameters()) entries.push_back({p.key(), torch::kFloat32, p.value().sizes().vec()});
    ckpt::SafetensorsWriter w(d + "/text_encoder/model.safetensors", entries, {});
    for (const auto& p : m->named_parameters()) w.write(p.key(), p.value());
    w.commit();
    return d;
  }();
  return dir;
}

// Eight PNGs of assorted sizes with captions (the third with a synthetic one), and one broken file.
const std::string& images() {
  static const std::string dir = [] {
    const std::string d = test::scratch_dir("images");
    const int64_t sizes[][2] = {{40, 48}, {64, 32}, {32, 32}, {24, 60}, {50, 50}, {36, 44}, {80, 40}, {32, 48}};
    for (int i = 0; i < 8; ++i) {
      torch::manual_seed(100 + i);
      const auto h = sizes[i][0], w = sizes[i][1];
      char name[32];
      std::snprintf(name, sizeof name, "img-%02d", i);
      data::write_png(d + "/" + name + ".png", torch::rand({3, h, w}) * 2 - 1);
      std::ofstream(d + "/" + name + ".txt") << "a photo of " << (i + 1) << " red cubes on a table\n"
                                             << (i == 2 ? "three cubes beside a wooden box\n" : "");
    }
    std::ofstream(d + "/img-99.png") << "this is not a png";
    std::ofstream(d + "/img-99.txt") << "broken\n";
    return d;
  }();
  return dir;
}

// ranks 0: the program alone (a singleton MPI job), so that a signal reaches the encoding process itself.
std::string encode_cmd(int ranks, const std::string& out, const std::string& extra = "") {
  const std::string launcher =
      ranks == 0 ? "" : std::string(MPIEXEC) + " --allow-run-as-root --oversubscribe -n " + std::to_string(ranks) + " ";
  return launcher + DTDATA_PATH + " encode --images " + images() + " --vae " + encoders() + "/vae --text-encoder " +
         encoders() + "/text_encoder --resolution 16 --images-per-shard 3 --batch 2 --threads 1 --out " + out + " " +
         extra;
}

std::vector<std::string> shards_of(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".h5") out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

void check_same_shard(const std::string& a, const std::string& b) {
  INFO(a << " vs " << b);
  data::ShardReader x(a), y(b);
  REQUIRE(x.num_images() == y.num_images());
  REQUIRE(x.num_captions() == y.num_captions());
  CHECK(x.caption_texts() == y.caption_texts());
  for (int64_t i = 0; i < x.num_images(); ++i) {
    CHECK(torch::equal(x.read_latent(i), y.read_latent(i)));
    CHECK(x.original_size(i) == y.original_size(i));
    CHECK(x.crop(i) == y.crop(i));
  }
  for (int64_t j = 0; j < x.num_captions(); ++j) {
    CHECK(torch::equal(x.read_tokens(j), y.read_tokens(j)));
    CHECK(x.caption_nouns(j) == y.caption_nouns(j));
  }
}

void write_jpeg(const std::string& path, const std::vector<uint8_t>& rgb, int w, int h) {
  jpeg_compress_struct c{};
  jpeg_error_mgr err{};
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f);
  jpeg_stdio_dest(&c, f);
  c.image_width = w, c.image_height = h, c.input_components = 3, c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 95, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(rgb.data()) + c.next_scanline * w * 3;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(f);
}

}  // namespace

TEST_CASE("dtdata encode: a PNG folder -> valid shards; 1 and 2 ranks identical; the broken image skipped and named") {
  const std::string one = test::scratch_dir("enc-1"), two = test::scratch_dir("enc-2");
  const auto r1 = test::run_process(encode_cmd(1, one));
  INFO(r1.out);
  REQUIRE(r1.status == 0);
  CHECK_THAT(r1.out, Catch::Contains("encoded 9 items into 3 shards") &&
                         Catch::Contains("1 unreadable image(s) skipped") && Catch::Contains("img-99.png"));
  const auto r2 = test::run_process(encode_cmd(2, two));
  INFO(r2.out);
  REQUIRE(r2.status == 0);
  REQUIRE(shards_of(one) == std::vector<std::string>{"shard-00000.h5", "shard-00001.h5", "shard-00002.h5"});
  REQUIRE(shards_of(two) == shards_of(one));
  for (const auto& s : shards_of(one)) check_same_shard(one + "/" + s, two + "/" + s);
  const auto v = test::run_process(std::string(DTDATA_PATH) + " validate " + one);
  INFO(v.out);
  CHECK(v.status == 0);
  CHECK_THAT(v.out, Catch::Contains("8 images, 9 captions"));
  {  // ... and train: the quickstart UNet for two steps on them (4 x 4 x 4 latents, 32-wide tokens), its
     // samples decoded by the VAE into a PNG grid beside the latents
    const std::string train = std::string(MPIEXEC) + " --allow-run-as-root -n 1 " + DTRAINER_PATH + " --data " + one +
                              " --eval-data " + two +
                              " --model unet-tiny --steps 2 --global-batch 4 --micro-batch 4 --eval-every 0 "
                              "--warmup-steps 0 --sample-count 3 --sample-steps 2 --threads 1 ";
    const std::string run = test::scratch_dir("enc-train") + "/r";
    const auto t = test::run_process(train + "--vae " + encoders() + "/vae --run-dir " + run);
    INFO(t.out);
    CHECK(t.status == 0);
    CHECK(fs::exists(run + "/samples/step_00000002.pt"));
    REQUIRE(fs::exists(run + "/samples/step_00000002.png"));
    const torch::Tensor grid = data::read_png(run + "/samples/step_00000002.png");
    // two rows (held-out, samples) of three decoded 16 px images, shown 4x as 64 px tiles, 2 px apart
    CHECK(grid.size(1) == 2 * (64 + 2) + 2);
    CHECK(grid.size(2) == 3 * (64 + 2) + 2);
    // A VAE of other latent channels is refused at start-up, naming it; nothing is written.
    const std::string other = test::scratch_dir("vae8");
    fs::copy_file(encoders() + "/vae/diffusion_pytorch_model.safetensors",
                  other + "/diffusion_pytorch_model.safetensors");
    nlohmann::json config = nlohmann::json::parse(read_file(encoders() + "/vae/config.json"));
    config["latent_channels"] = 8;
    write_file_atomic(other + "/config.json", config.dump());
    const std::string refused = test::scratch_dir("enc-train-bad") + "/r";
    const auto bad = test::run_process(train + "--vae " + other + " --run-dir " + refused);
    CHECK(bad.status == 2);
    CHECK_THAT(bad.out, Catch::Contains("vae: " + other + ": has 8 latent channels, the data's latents 4"));
    CHECK_FALSE(fs::exists(refused));
  }
  // What a shard holds: f = 4 latents of the 16 px crops, 32-wide token states (start .. end), the
  // original size and the centre crop's top / left in the resized image, the captions in order.
  data::ShardReader s0(one + "/shard-00000.h5");
  CHECK(s0.latent_shape() == std::vector<int64_t>{4, 4, 4});
  CHECK(s0.header().text_dim == 32);
  CHECK(s0.header().latent_space == "sdxl-vae");  // (the fixture's scaling factor is SDXL's)
  CHECK(s0.original_size(0) == std::array<int64_t, 2>{40, 48});
  CHECK(s0.crop(0) == std::array<int64_t, 2>{0, (19 - 16) / 2});  // 40 x 48 -> 16 x 19 (rounded), centred
  CHECK(s0.original_size(1) == std::array<int64_t, 2>{64, 32});
  CHECK(s0.crop(1) == std::array<int64_t, 2>{(32 - 16) / 2, 0});
  CHECK(s0.caption_count(2) == 2);
  CHECK(s0.caption_texts()[2] == "a photo of 3 red cubes on a table");
  CHECK(s0.caption_texts()[3] == "three cubes beside a wooden box");
  CHECK(s0.caption_nouns(0) == data::count_caption_nouns("a photo of 1 red cubes on a table"));
  // Token states are the encoder's: start + pieces + end rows, the same for the same caption.
  CHECK(s0.token_length(0) == s0.token_length(1));
  // A random crop and a sampled latent are keyed: another seed changes them, the same seed does not.
  const std::string r = test::scratch_dir("enc-random");
  REQUIRE(test::run_process(encode_cmd(1, r, "--crop random --sample --seed 5")).status == 0);
  data::ShardReader sr(r + "/shard-00000.h5");
  CHECK_FALSE(torch::equal(sr.read_latent(0), s0.read_latent(0)));
}

TEST_CASE("dtdata encode: crop-scale crops are drawn per crop and recorded; K crops per image") {
  const std::string out = test::scratch_dir("enc-scale");
  const auto r = test::run_process(encode_cmd(2, out, "--crop-scale 0.4,0.6 --crops-per-image 2"));
  INFO(r.out);
  REQUIRE(r.status == 0);
  int64_t images = 0;
  std::set<std::array<int64_t, 2>> crops;
  for (const auto& s : shards_of(out)) {
    data::ShardReader reader(out + "/" + s);
    images += reader.num_images();
    for (int64_t i = 0; i < reader.num_images(); ++i) crops.insert(reader.crop(i));
    // both crops of an image carry its captions
    for (int64_t i = 0; i + 1 < reader.num_images(); i += 2)
      CHECK(reader.caption_texts()[reader.first_caption(i)] == reader.caption_texts()[reader.first_caption(i + 1)]);
  }
  CHECK(images == 16);
  CHECK(crops.size() > 4);  // (a local crop sits anywhere: offsets vary)
}

TEST_CASE("dtdata encode: a killed run resumes without redoing finished shards") {
  const std::string out = test::scratch_dir("enc-kill"), clean = test::scratch_dir("enc-clean");
  REQUIRE(test::run_process(encode_cmd(1, clean)).status == 0);
  // Reads of img-05.png (shard 1) stall: shard 0 finishes, then the run hangs there and is killed.
  test::SpawnedRun run("env LD_PRELOAD=" + std::string(DTFAULT_PATH) +
                       " DT_FAULT_PATH=img-05.png DT_FAULT_STALL_S=60 " + encode_cmd(0, out) + " > " + out +
                       ".log 2>&1");
  const std::string record = out + "/encode/shard-00000.json";
  for (int i = 0; i < 600 && !fs::exists(record); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(fs::exists(record));
  kill(-run.pid(), SIGKILL);
  run.wait();
  CHECK_FALSE(fs::exists(out + "/encode/shard-00002.json"));
  struct stat before {};
  REQUIRE(stat((out + "/shard-00000.h5").c_str(), &before) == 0);
  const auto again = test::run_process(encode_cmd(1, out));
  INFO(again.out);
  REQUIRE(again.status == 0);
  CHECK_THAT(again.out, Catch::Contains("1 done before"));
  struct stat after {};
  REQUIRE(stat((out + "/shard-00000.h5").c_str(), &after) == 0);
  CHECK(after.st_ino == before.st_ino);  // (not rewritten: a rewrite renames a new file over it)
  CHECK(after.st_mtime == before.st_mtime);
  REQUIRE(shards_of(out) == shards_of(clean));
  for (const auto& s : shards_of(out)) check_same_shard(out + "/" + s, clean + "/" + s);
  // Other settings into the same folder are refused, naming the setting.
  const auto other = test::run_process(encode_cmd(1, out, "--seed 9"));
  CHECK(other.status == 2);
  CHECK_THAT(other.out, Catch::Contains("encode.json: records seed = 0, this run has 9"));
}

TEST_CASE("dtdata encode: bad input is a clear error and writes nothing") {
  const std::string out = test::scratch_dir("enc-bad") + "/out";
  auto expect = [&](const std::string& cmd, const std::string& message) {
    const auto r = test::run_process(cmd);
    INFO(cmd << "\n" << r.out);
    CHECK(r.status == 2);
    CHECK_THAT(r.out, Catch::Contains(message));
    CHECK_FALSE(fs::exists(out + "/shard-00000.h5"));
  };
  const std::string base = std::string(MPIEXEC) + " --allow-run-as-root -n 1 " + DTDATA_PATH + " encode --out " + out;
  const std::string models = " --vae " + encoders() + "/vae --text-encoder " + encoders() + "/text_encoder";
  expect(base + models + " --images /nonexistent/pics", "/nonexistent/pics: is not a readable folder");
  expect(base + " --images " + images() + " --vae /nonexistent/vae --text-encoder " + encoders() + "/text_encoder",
         "/nonexistent/vae: is not a folder");
  expect(base + models + " --images " + images() + " --resolution 18", "--resolution: 18 is not a multiple of");
  expect(base + models + " --images " + images() + " --crops-per-image 3", "--crops-per-image: needs --crop-scale");
  {  // an image without its caption file
    const std::string dir = test::scratch_dir("enc-nocap");
    fs::copy_file(images() + "/img-00.png", dir + "/a.png");
    expect(base + models + " --images " + dir, "a.png: has no caption file a.txt");
  }
  {  // a list file with a broken line, and a text encoder missing a tensor
    const std::string dir = test::scratch_dir("enc-list");
    std::ofstream(dir + "/items.jsonl") << "{\"image\": \"a.png\", \"caption\": \"x\"}\n{\"image\": 3}\n";
    expect(base + models + " --list " + dir + "/items.jsonl", "items.jsonl:2: needs \"image\"");
    fs::create_directories(dir + "/te");
    fs::copy_file(encoders() + "/text_encoder/config.json", dir + "/te/config.json");
    const ckpt::SafetensorsFile in(encoders() + "/text_encoder/model.safetensors");
    std::vector<ckpt::SafetensorsEntry> kept;
    for (const auto& e : in.entries())
      if (e.name != "text_model.final_layer_norm.bias") kept.push_back(e);
    ckpt::SafetensorsWriter w(dir + "/te/model.safetensors", kept, {});
    for (const auto& e : kept) w.write(e.name, in.read(e.name));
    w.commit();
    expect(base + " --images " + images() + " --vae " + encoders() + "/vae --text-encoder " + dir + "/te --tokenizer " +
               encoders() + "/tokenizer",
           "has no tensor 'text_model.final_layer_norm.bias'");
  }
}

TEST_CASE("JPEG images decode to [3, H, W] in [-1, 1]; files that are neither PNG nor JPEG are named") {
  const std::string dir = test::scratch_dir("jpeg");
  const int w = 40, h = 24;
  std::vector<uint8_t> rgb(static_cast<size_t>(w * h * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &rgb[static_cast<size_t>((y * w + x) * 3)];
      p[0] = static_cast<uint8_t>(x * 6), p[1] = static_cast<uint8_t>(y * 10), p[2] = 128;
    }
  write_jpeg(dir + "/a.jpg", rgb, w, h);
  const torch::Tensor img = data::read_image(dir + "/a.jpg");
  REQUIRE(img.sizes() == torch::IntArrayRef({3, h, w}));
  const torch::Tensor want =
      torch::from_blob(rgb.data(), {h, w, 3}, torch::kUInt8).permute({2, 0, 1}).to(torch::kFloat32) / 127.5 - 1;
  INFO("mean |difference| " << (img - want).abs().mean().item<double>());
  CHECK((img - want).abs().mean().item<double>() < 0.02);  // (lossy, at quality 95)
  std::ofstream(dir + "/b.jpg") << "\xFF\xD8\xFF garbage";
  CHECK_THROWS_WITH(data::read_image(dir + "/b.jpg"), Catch::Contains("b.jpg: is not a readable JPEG"));
  std::ofstream(dir + "/c.png") << "GIF89a";
  CHECK_THROWS_WITH(data::read_image(dir + "/c.png"), Catch::Contains("c.png: is neither a PNG nor a JPEG"));
}

TEST_CASE("the noun heuristic counts the nouns of plain captions") {
  CHECK(data::count_caption_nouns("a photo of a cat") == 2);
  CHECK(data::count_caption_nouns("A red cube to the left of two blue spheres.") == 2);
  CHECK(data::count_caption_nouns("the dog's ball is lying on the green grass") == 3);
  CHECK(data::count_caption_nouns("") == 0);
}

TEST_CASE(
    "the shapes world through dtdata encode: a latent run scores alignment on decoded samples, and so does dteval") {
  const std::string root = test::scratch_dir("enc-shapes");
  for (const auto& [dir, seed] : {std::pair<std::string, int>{"/png", 1}, {"/png-eval", 2}})
    REQUIRE(test::run_process(std::string(DTDATA_PATH) + " synth --kind shapes --png --out " + root + dir +
                              " --images 24 --image-size 16 --eval-prompts 6 --seed " + std::to_string(seed))
                .status == 0);
  CHECK(fs::exists(root + "/png/00000.png"));
  CHECK(fs::exists(root + "/png/00000.txt"));
  for (const std::string part : {"png", "png-eval"}) {
    const std::string cmd = std::string(DTDATA_PATH) + " encode --images " + root + "/" + part + " --vae " +
                            encoders() + "/vae --text-encoder " + encoders() +
                            "/text_encoder --resolution 16 --threads 1 --out " + root + "/" + part + "-latents";
    const auto r = test::run_process(cmd);
    INFO(r.out);
    REQUIRE(r.status == 0);
    CHECK(fs::exists(root + "/" + part + "-latents/eval_prompts.json"));  // (the prompts go with the shards)
  }
  const std::string run = root + "/run";
  const auto t = test::run_process(std::string(MPIEXEC) + " --allow-run-as-root -n 1 " + DTRAINER_PATH + " --data " +
                                   root + "/png-latents --eval-data " + root + "/png-eval-latents" +
                                   " --model unet-tiny --steps 2 --global-batch 4 --warmup-steps 0 --eval-every 0"
                                   " --sample-count 0 --sample-steps 2 --align-every 2 --align-prompts 6 --threads 1"
                                   " --run-dir " +
                                   run);
  INFO(t.out);
  REQUIRE(t.status == 0);
  std::ifstream metrics(run + "/metrics.jsonl");
  int records = 0;
  for (std::string line; std::getline(metrics, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("alignment")) continue;
    ++records;
    CHECK(j["alignment_prompts"] == 6);
  }
  CHECK(records >= 1);
  // The decoded images are RGB at the encoded resolution.
  CHECK(data::read_png(run + "/alignment/step_00000002/00000/samples/0000.png").sizes() ==
        torch::IntArrayRef({3, 16, 16}));
  const auto e = test::run_process(std::string(MPIEXEC) + " --allow-run-as-root -n 1 " + DTEVAL_PATH + " alignment " +
                                   run + " --steps 2 --out " + root + "/dteval");
  INFO(e.out);
  CHECK(e.status == 0);
  CHECK(fs::exists(root + "/dteval/alignment.json"));
}
