#pragma once
// The folder layout of a public release's component (diffusers / transformers): a config.json and
// one safetensors weights file, e.g. an SDXL release's vae/ (diffusion_pytorch_model.safetensors)
// or text_encoder/ (model.safetensors). Shared by the encoders' loaders.

#include <cstdint>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace dtrainer::models {

struct PretrainedFolder {
  std::string config;   // <dir>/config.json
  std::string weights;  // <dir>/<weights file>
};

// Checks that `dir` is a folder holding config.json and `weights_file` (a pickled .bin beside a
// missing .safetensors gets its own hint), or throws Error naming the missing path. `what` says
// what the folder is ("a diffusers AutoencoderKL folder ... e.g. the 'vae' folder of an SDXL release").
PretrainedFolder find_pretrained_folder(const std::string& dir, const std::string& weights_file,
                                        const std::string& what);

// config.json parsed as a JSON object; Error(path, ...) when it is not one.
nlohmann::json read_json_object(const std::string& path);

// Typed reads of a config object's optional fields: an absent or null field leaves the value as
// it is; a field of another type is an Error("<path>: <key>", ...).
class ConfigFields {
 public:
  ConfigFields(const nlohmann::json& object, std::string path) : j_(object), path_(std::move(path)) {}
  const nlohmann::json* find(const char* key) const;  // nullptr when absent or null
  void integer(const char* key, int64_t& out) const;
  void real(const char* key, double& out) const;
  void text(const char* key, std::string& out) const;

 private:
  const nlohmann::json& j_;
  std::string path_;
};

}  // namespace dtrainer::models
