// CLIP's text encoder and tokenizer against OpenAI's reference implementation (fixtures made by
// tests/models/fixtures/make_encoder_fixtures.py): hidden states of every layer dtrainer can read,
// the pooled projection, the released configurations' parameter counts, the token ids of tricky
// captions, and the loaders' errors.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "../data/data_test_util.h"
#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/models/clip_text_model.h"
#include "dtrainer/models/clip_tokenizer.h"

using namespace dtrainer;
using namespace dtrainer::models;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = DT_FIXTURES;

void check_close(const torch::Tensor& got, const torch::Tensor& want, double tol = 1e-4) {
  REQUIRE(got.sizes() == want.sizes());
  const double diff = (got.to(torch::kFloat32) - want).abs().max().item<double>();
  INFO("max |difference| " << diff << ", max |reference| " << want.abs().max().item<double>());
  CHECK(diff < tol);
}

int64_t count(const CLIPTextConfig& c) {
  CLIPTextModel m(c);
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  return n;
}

}  // namespace

TEST_CASE("CLIP text model matches OpenAI's: last, penultimate and penultimate-normed states, pooled") {
  for (const std::string name : {"clip_text", "clip_text_projection"}) {
    INFO(name);
    const std::string dir = kFixtures + "/" + name;
    const ckpt::SafetensorsFile ref(dir + "/reference.safetensors");
    CLIPTextModel model = load_clip_text_model(dir);
    const bool projected = name == "clip_text_projection";
    CHECK(model->config().hidden_act == (projected ? "gelu" : "quick_gelu"));
    CHECK(model->config().projection_dim == (projected ? 24 : 0));
    torch::NoGradGuard g;
    const torch::Tensor ids = ref.read("ids").to(torch::kLong);
    for (const auto& [layer, key] : {std::pair<CLIPTextLayer, const char*>{CLIPTextLayer::kLast, "last"},
                                     {CLIPTextLayer::kPenultimate, "penultimate"},
                                     {CLIPTextLayer::kPenultimateNormed, "penultimate_normed"}}) {
      INFO(key);
      const CLIPTextOutput out = model->forward(ids, layer);
      check_close(out.hidden, ref.read(key));
      CHECK(out.pooled.defined() == projected);
      if (projected) check_close(out.pooled, ref.read("pooled"));
    }
    // Causal: a caption's real tokens have the same states without the padding after its end token.
    const torch::Tensor padded = model->forward(ids).hidden;
    for (int64_t row = 0; row < ids.size(0); ++row) {
      const int64_t n = ids[row].ne(0).sum().item<int64_t>();
      check_close(model->forward(ids[row].narrow(0, 0, n).unsqueeze(0)).hidden[0], padded[row].narrow(0, 0, n), 1e-5);
    }
  }
}

TEST_CASE("the released CLIP text towers have their published parameter counts and transformers' names") {
  CHECK(count(clip_text_preset("clip-vit-l-14")) == 123060480);          // openai/clip-vit-large-patch14's text model
  CHECK(count(clip_text_preset("open-clip-vit-bigg-14")) == 694659840);  // SDXL's text_encoder_2 (with projection)
  // OpenCLIP ViT-H/14's text tower in closed form: embeddings, 24 blocks of 12 W^2 + 13 W, final norm.
  const int64_t W = 1024;
  CHECK(count(clip_text_preset("open-clip-vit-h-14")) == (49408 + 77) * W + 24 * (12 * W * W + 13 * W) + 2 * W);
  CLIPTextModel l(clip_text_preset("clip-vit-l-14"));
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& p : l->named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  CHECK(shapes.size() == 2 + 12 * 16 + 2);
  CHECK(shapes.at("text_model.embeddings.token_embedding.weight") == std::vector<int64_t>{49408, 768});
  CHECK(shapes.at("text_model.embeddings.position_embedding.weight") == std::vector<int64_t>{77, 768});
  CHECK(shapes.at("text_model.encoder.layers.11.self_attn.q_proj.weight") == std::vector<int64_t>{768, 768});
  CHECK(shapes.at("text_model.encoder.layers.0.mlp.fc1.weight") == std::vector<int64_t>{3072, 768});
  CHECK(shapes.at("text_model.encoder.layers.5.layer_norm2.bias") == std::vector<int64_t>{768});
  CHECK(shapes.at("text_model.final_layer_norm.weight") == std::vector<int64_t>{768});
  CHECK(shapes.count("text_projection.weight") == 0);
}

TEST_CASE("CLIP tokenizer: the reference's ids for tricky captions") {
  const CLIPTokenizer tok = CLIPTokenizer::from_folder(kFixtures + "/clip_tokenizer");
  const nlohmann::json ref = nlohmann::json::parse(read_file(kFixtures + "/clip_tokenizer/captions.json"));
  CHECK(tok.vocab_size() == 512 + ref["merges"].get<int64_t>() + 2);
  CHECK(tok.start_id() == tok.vocab_size() - 2);
  CHECK(tok.end_id() == tok.vocab_size() - 1);
  const auto& captions = ref["captions"];
  REQUIRE(captions.size() >= 10);
  for (size_t i = 0; i < captions.size(); ++i) {
    const std::string caption = captions[i].get<std::string>();
    INFO("caption " << i << ": " << caption);
    CHECK(CLIPTokenizer::normalize(caption) == ref["normalized"][i].get<std::string>());
    const std::vector<int64_t> ids = tok.encode(caption);
    CHECK(ids == ref["ids"][i].get<std::vector<int64_t>>());
    CHECK(ids.size() <= 77);
  }
  // The long caption is cut to 75 pieces between the start and end tokens.
  const std::vector<int64_t> long_ids = tok.encode(captions.back().get<std::string>());
  CHECK(long_ids.size() == 77);
  CHECK(tok.tokenize(captions.back().get<std::string>()).size() > 75);
  CHECK(tok.encode("", 77) == std::vector<int64_t>{tok.start_id(), tok.end_id()});
  CHECK(tok.encode("a photo of a cat", 4).size() == 4);
}

TEST_CASE("tokenizer and text encoder errors name the file, the entry or the argument") {
  const CLIPTokenizer tok = CLIPTokenizer::from_folder(kFixtures + "/clip_tokenizer");
  CHECK_THROWS_WITH(tok.encode(std::string("caf\xc3", 4)), Catch::StartsWith("caption: is not valid UTF-8"));
  CHECK_THROWS_WITH(tok.encode("x", 1), Catch::StartsWith("max_length: must be at least 2"));
  CHECK_THROWS_WITH(CLIPTokenizer::from_folder("/nonexistent/tok"), Catch::Contains("is not a folder"));
  {
    const std::string dir = test::scratch_dir("tok-bad");
    fs::copy_file(kFixtures + "/clip_tokenizer/vocab.json", dir + "/vocab.json");
    CHECK_THROWS_WITH(CLIPTokenizer::from_folder(dir), Catch::Contains("merges.txt: not found"));
    write_file_atomic(dir + "/merges.txt", "#version: 0.2\nt h\nthree symbols here\n");
    CHECK_THROWS_WITH(CLIPTokenizer::from_folder(dir), Catch::Contains("merges.txt:3: expected two symbols"));
    write_file_atomic(dir + "/vocab.json", "{\"a\": 0}");
    CHECK_THROWS_WITH(CLIPTokenizer::from_folder(dir), Catch::Contains("has no <|startoftext|> token"));
  }
  CLIPTextModel model = load_clip_text_model(kFixtures + "/clip_text");
  torch::NoGradGuard g;
  CHECK_THROWS_WITH(model->forward(torch::zeros({1, 17}, torch::kLong)),
                    Catch::StartsWith("ids: expected int64 token ids [B, T] with 1 <= T <= 16"));
  CHECK_THROWS_WITH(model->forward(torch::full({1, 3}, 500, torch::kLong)),
                    Catch::StartsWith("ids: token ids must be in 0..499"));
  CHECK_THROWS_WITH(model->forward(torch::zeros({1, 3})), Catch::StartsWith("ids: expected int64"));
  {  // a tensor missing, and a config that is not CLIP's
    const std::string dir = test::scratch_dir("clip-bad");
    fs::copy_file(kFixtures + "/clip_text/config.json", dir + "/config.json");
    CHECK_THROWS_WITH(load_clip_text_model(dir), Catch::Contains("model.safetensors: not found"));
    const ckpt::SafetensorsFile in(kFixtures + "/clip_text/model.safetensors");
    std::vector<ckpt::SafetensorsEntry> entries;
    for (const auto& e : in.entries())
      if (e.name != "text_model.encoder.layers.1.mlp.fc2.bias") entries.push_back(e);
    {
      ckpt::SafetensorsWriter w(dir + "/model.safetensors", entries, {});
      for (const auto& e : entries) w.write(e.name, in.read(e.name));
      w.commit();
    }
    CHECK_THROWS_WITH(load_clip_text_model(dir),
                      Catch::Contains("has no tensor 'text_model.encoder.layers.1.mlp.fc2.bias'"));
    nlohmann::json c = nlohmann::json::parse(read_file(dir + "/config.json"));
    c["hidden_act"] = "relu";
    write_file_atomic(dir + "/config.json", c.dump());
    CHECK_THROWS_WITH(load_clip_text_model(dir), Catch::Contains("config.json.hidden_act: is 'relu'"));
  }
}
