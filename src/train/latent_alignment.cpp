#include "dtrainer/train/latent_alignment.h"

#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"

namespace fs = std::filesystem;

namespace dtrainer::train {

std::optional<EncodedData> find_encoded_data(const std::vector<std::string>& dirs) {
  std::error_code ec;
  for (const auto& d : dirs) {
    const fs::path record = fs::path(d) / "encode.json";
    if (!fs::exists(record, ec)) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(record));
    } catch (const nlohmann::json::exception& e) {
      throw Error(record.string(), std::string("is not valid JSON: ") + e.what());
    }
    auto text = [&](const char* key) {
      if (!j.contains(key) || !j[key].is_string()) throw Error(record.string(), std::string("has no ") + key);
      return j[key].get<std::string>();
    };
    EncodedData e;
    e.record = record.string();
    e.vae = text("vae");
    e.text.text_encoders = {text("text_encoder")};
    if (!text("text_encoder_2").empty()) e.text.text_encoders.push_back(text("text_encoder_2"));
    e.text.layer = text("text_layer");
    e.text.dtype = text("dtype");
    if (!j.contains("tokenizers") || !j["tokenizers"].is_array() ||
        j["tokenizers"].size() != e.text.text_encoders.size())
      throw Error(record.string(), "has no tokenizers for its text encoders (written by an older dtdata encode?)");
    for (const auto& t : j["tokenizers"]) e.text.tokenizers.push_back(t.get<std::string>());
    return e;
  }
  return std::nullopt;
}

LatentAlignment load_latent_alignment(const std::vector<std::string>& dirs, const std::string& vae) {
  const std::optional<EncodedData> e = find_encoded_data(dirs);
  if (!e)
    throw Error("alignment",
                "this latent data has no encode.json (dtdata encode's record of its encoders): the prompts cannot be "
                "encoded as its captions were, nor its samples decoded");
  auto text = std::make_shared<data::CaptionEncoder>(e->text);
  auto decoder = std::make_shared<models::AutoencoderKL>(models::load_autoencoder(vae.empty() ? e->vae : vae));
  LatentAlignment a;
  a.encode_prompts = [text](const std::vector<std::string>& prompts) { return text->encode(prompts); };
  a.to_pixels = [decoder](const torch::Tensor& latents) {
    torch::NoGradGuard no_grad;
    return (*decoder)->decode(latents).to(torch::kFloat32).clamp(-1, 1);
  };
  return a;
}

}  // namespace dtrainer::train
