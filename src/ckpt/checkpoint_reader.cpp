#include "dtrainer/ckpt/checkpoint.h"

#include <hdf5.h>

#include <filesystem>
#include <map>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/data/hdf5_lock.h"
#include "state_file.h"

namespace fs = std::filesystem;

namespace dtrainer::ckpt {

CheckpointReader::CheckpointReader(const std::string& dir) : dir_(dir), h5_((fs::path(dir) / "state.h5").string()) {
  const fs::path d(dir);
  meta_ = read_complete_manifest(d, "checkpoint");
  if (!meta_.is_object() || !meta_.contains("units") || !meta_["units"].is_array())
    throw Error((d / "meta.json").string(), "has no 'units' list (not a dtrainer checkpoint?)");
  if (meta_.contains("format_version")) {
    if (!meta_["format_version"].is_number_integer())
      throw Error((d / "meta.json").string(), "format_version is not an integer");
    version_ = meta_["format_version"].get<int>();
    if (version_ < 1 || version_ > kCheckpointFormatVersion)
      throw Error((d / "meta.json").string(),
                  "checkpoint format " + std::to_string(version_) + "; this dtrainer reads formats 1 to " +
                      std::to_string(kCheckpointFormatVersion) + " (written by a newer dtrainer?)");
  }
  std::lock_guard<std::mutex> lock(data::hdf5_mutex());
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // failures become our errors, not HDF5's stack dumps
  file_ = H5Fopen(h5_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file_ < 0) throw Error(h5_, "cannot open the checkpoint file");
}

CheckpointReader::~CheckpointReader() {
  if (file_ < 0) return;
  std::lock_guard<std::mutex> lock(data::hdf5_mutex());
  H5Fclose(file_);
}

int64_t CheckpointReader::step() const { return meta_.value("step", int64_t{-1}); }

std::vector<std::pair<std::string, int64_t>> CheckpointReader::units() const {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& u : meta_["units"]) {
    if (!u.is_object() || !u.contains("name") || !u.contains("numel") || !u["name"].is_string() ||
        !u["numel"].is_number_integer())
      throw Error(dir_ + "/meta.json", "malformed 'units' entry " + u.dump());
    out.emplace_back(u["name"].get<std::string>(), u["numel"].get<int64_t>());
  }
  return out;
}

std::vector<models::UnitLayout> CheckpointReader::layout() const {
  const std::string where = dir_ + "/meta.json";
  if (!meta_.contains("layout"))
    throw Error(where,
                "has no parameter layout (saved by a dtrainer older than dtckpt); resume it with this dtrainer and "
                "save again");
  std::vector<models::UnitLayout> l = layout_from_json(meta_["layout"], where);
  const auto u = units();
  if (l.size() != u.size())
    throw Error(where, "the layout lists " + std::to_string(l.size()) + " units, 'units' " + std::to_string(u.size()));
  for (size_t i = 0; i < l.size(); ++i)
    if (l[i].unit != u[i].first || l[i].numel != u[i].second)
      throw Error(where, "layout unit " + l[i].unit + " (" + std::to_string(l[i].numel) +
                             " elements) does not match unit " + u[i].first + " (" + std::to_string(u[i].second) + ")");
  return l;
}

bool CheckpointReader::has(const std::string& unit, const std::string& kind) const {
  std::lock_guard<std::mutex> lock(data::hdf5_mutex());
  const std::string name = "units/" + unit + "/" + kind;
  return H5Lexists(file_, "units", H5P_DEFAULT) > 0 && H5Lexists(file_, ("units/" + unit).c_str(), H5P_DEFAULT) > 0 &&
         H5Lexists(file_, name.c_str(), H5P_DEFAULT) > 0;
}

int64_t CheckpointReader::stored_length(const std::string& unit, const std::string& kind) const {
  if (!has(unit, kind)) return -1;
  std::lock_guard<std::mutex> lock(data::hdf5_mutex());
  const hid_t dset = H5Dopen2(file_, ("units/" + unit + "/" + kind).c_str(), H5P_DEFAULT);
  if (dset < 0) return -1;
  const int64_t n = vector_length(dset);
  H5Dclose(dset);
  return n;
}

bool CheckpointReader::has_ema() const {
  const auto all = units();
  for (const auto& u : all)
    if (!has(u.first, "ema")) return false;
  return !all.empty();
}

std::vector<std::string> CheckpointReader::averages() const {
  if (!meta_.contains("averages")) return has_ema() ? std::vector<std::string>{"ema"} : std::vector<std::string>{};
  const auto& a = meta_["averages"];
  std::vector<std::string> out;
  if (a.is_array())
    for (const auto& n : a)
      if (n.is_string()) out.push_back(n.get<std::string>());
  if (!a.is_array() || out.size() != a.size()) throw Error(dir_ + "/meta.json", "'averages' is not a list of names");
  return out;
}

bool CheckpointReader::has_checksums() const { return meta_.contains("checksums") && meta_["checksums"].is_object(); }

std::string CheckpointReader::checksum_problem(const std::string& unit, const std::string& kind,
                                               const torch::Tensor& data) const {
  if (!has_checksums()) return "";
  const std::string name = "units/" + unit + "/" + kind;
  const auto& sums = meta_["checksums"];
  if (!sums.contains(name) || !sums[name].is_string())
    return name + ": no checksum in meta.json (a manifest edited by hand, or mixed checkpoints?)";
  const std::string want = sums[name].get<std::string>();
  const std::string got = crc_text(crc_of(data.data_ptr(), data.numel() * 4));
  if (got == want) return "";
  return name + ": corrupt: its checksum is " + got + ", the manifest recorded " + want +
         " when it was saved (bit flips on disk, or a torn copy)";
}

torch::Tensor CheckpointReader::read(const std::string& unit, const std::string& kind, int64_t numel,
                                     bool verify) const {
  torch::Tensor t;
  {
    std::lock_guard<std::mutex> lock(data::hdf5_mutex());
    t = read_vector(file_, "units/" + unit + "/" + kind, numel, h5_);
  }
  if (verify) {
    const std::string problem = checksum_problem(unit, kind, t);
    if (!problem.empty()) throw Error(h5_, problem);
  }
  return t;
}

nlohmann::json layout_to_json(const std::vector<models::UnitLayout>& layout) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& u : layout) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : u.tensors) tensors.push_back({t.name, t.shape});
    out.push_back({{"unit", u.unit}, {"tensors", tensors}});
  }
  return out;
}

std::vector<models::UnitLayout> layout_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array()) throw Error(where, "'layout' is not a list");
  std::vector<models::UnitLayout> out;
  for (const auto& u : j) {
    if (!u.is_object() || !u.contains("unit") || !u["unit"].is_string() || !u.contains("tensors") ||
        !u["tensors"].is_array())
      throw Error(where, "malformed layout entry (want {unit, tensors})");
    models::UnitLayout l{u["unit"].get<std::string>(), {}, 0};
    for (const auto& t : u["tensors"]) {
      if (!t.is_array() || t.size() != 2 || !t[0].is_string() || !t[1].is_array())
        throw Error(where, "unit " + l.unit + ": malformed tensor entry " + t.dump() + " (want [name, shape])");
      models::TensorLayout e{t[0].get<std::string>(), {}, l.numel};
      for (const auto& d : t[1]) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0)
          throw Error(where, "tensor " + e.name + ": bad shape " + t[1].dump());
        e.shape.push_back(d.get<int64_t>());
      }
      l.numel += e.numel();
      l.tensors.push_back(std::move(e));
    }
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace dtrainer::ckpt
