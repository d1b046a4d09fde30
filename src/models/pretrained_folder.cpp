#include "dtrainer/models/pretrained_folder.h"

#include <filesystem>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"

namespace dtrainer::models {

PretrainedFolder find_pretrained_folder(const std::string& dir, const std::string& weights_file,
                                        const std::string& what) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw Error(dir, "is not a folder (expected " + what + ")");
  PretrainedFolder f{(fs::path(dir) / "config.json").string(), (fs::path(dir) / weights_file).string()};
  if (!fs::exists(f.config)) throw Error(f.config, "not found (the folder needs its config.json)");
  if (!fs::exists(f.weights)) {
    const fs::path bin = fs::path(f.weights).replace_extension(".bin");
    throw Error(f.weights, fs::exists(bin) ? "not found; only a pickled " + bin.filename().string() +
                                                 " is there, which dtrainer does not read (download the "
                                                 ".safetensors file of the same release)"
                                           : "not found (the weights, as the release names them)");
  }
  return f;
}

nlohmann::json read_json_object(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, std::string("is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw Error(path, "is not a JSON object");
  return j;
}

const nlohmann::json* ConfigFields::find(const char* key) const {
  const auto it = j_.find(key);
  return it == j_.end() || it->is_null() ? nullptr : &*it;
}

void ConfigFields::integer(const char* key, int64_t& out) const {
  if (const auto* v = find(key)) {
    if (!v->is_number_integer()) throw Error(path_ + ": " + key, "expected an integer, got " + v->dump());
    out = v->get<int64_t>();
  }
}

void ConfigFields::real(const char* key, double& out) const {
  if (const auto* v = find(key)) {
    if (!v->is_number()) throw Error(path_ + ": " + key, "expected a number, got " + v->dump());
    out = v->get<double>();
  }
}

void ConfigFields::text(const char* key, std::string& out) const {
  if (const auto* v = find(key)) {
    if (!v->is_string()) throw Error(path_ + ": " + key, "expected a string, got " + v->dump());
    out = v->get<std::string>();
  }
}

}  // namespace dtrainer::models
