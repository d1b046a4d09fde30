#include "dtrainer/ckpt/checkpoint.h"

#include <hdf5.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/remove_tree.h"
#include "dtrainer/data/hdf5_lock.h"

namespace fs = std::filesystem;

namespace dtrainer::ckpt {
namespace {

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

void fsync_path(const fs::path& p) {
  FILE* f = std::fopen(p.c_str(), "rb");
  if (f) {
    fsync(fileno(f));
    std::fclose(f);
  }
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw Error(p.string(), "cannot write");
  fsync_path(p);
}

// Every complete checkpoint under root, oldest first.
std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const fs::path& root) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  const std::regex name("step_([0-9]+)");
  for (const auto& e : fs::directory_iterator(root)) {
    std::smatch m;
    const std::string n = e.path().filename().string();
    if (e.is_directory() && std::regex_match(n, m, name) && fs::exists(e.path() / "COMPLETE"))
      out.emplace_back(std::stoll(m[1]), e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct H5File {
  hid_t id = -1;
  ~H5File() {
    if (id >= 0) H5Fclose(id);
  }
};

// Elements of a 1-D dataset; -1 for any other rank.
int64_t vector_length(hid_t dset) {
  const hid_t space = H5Dget_space(dset);
  hsize_t n = 0;
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank == 1) H5Sget_simple_extent_dims(space, &n, nullptr);
  H5Sclose(space);
  return rank == 1 ? static_cast<int64_t>(n) : -1;
}

torch::Tensor read_vector(hid_t file, const std::string& name, int64_t numel, const std::string& where) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) throw Error(where, "missing dataset " + name);
  hid_t dset = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
  const int64_t n = vector_length(dset);
  if (n != numel) {
    H5Dclose(dset);
    throw Error(where, "dataset " + name + " has " + std::to_string(std::max<int64_t>(n, 0)) + " elements, the model's unit has " +
                           std::to_string(numel) + " (a checkpoint of a different model?)");
  }
  torch::Tensor t = torch::empty({numel});
  const herr_t rc = H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr<float>());
  H5Dclose(dset);
  if (rc < 0) throw Error(where, "cannot read dataset " + name);
  return t;
}

// One dataset per unit and kind, `numel` long; every rank writes its shard's slice
// [rank * shard, rank * shard + shard) clipped to numel (the padding is not stored), collectively.
void write_slices(hid_t file, const std::string& name, const dist::UnitShard& s, const torch::Tensor& mine, int rank,
                  const std::string& where) {
  const hsize_t n = static_cast<hsize_t>(s.numel);
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  hid_t fspace = H5Screate_simple(1, &n, nullptr);
  hid_t dset = H5Dcreate2(file, name.c_str(), H5T_IEEE_F32LE, fspace, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  H5Pclose(lcpl);
  if (dset < 0) {
    H5Sclose(fspace);
    throw Error(where, "cannot create dataset " + name);
  }
  const int64_t first = rank * s.shard;
  const int64_t count = std::max<int64_t>(0, std::min<int64_t>(s.shard, s.numel - first));
  const hsize_t start = static_cast<hsize_t>(std::min<int64_t>(first, s.numel)), cnt = static_cast<hsize_t>(count);
  if (count > 0) H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, nullptr, &cnt, nullptr);
  else H5Sselect_none(fspace);
  hid_t mspace = H5Screate_simple(1, &cnt, nullptr);
  if (count == 0) H5Sselect_none(mspace);
  hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
  const torch::Tensor data = mine.narrow(0, 0, count).to(torch::kCPU).contiguous();  // (shards on a GPU: a host copy)
  const herr_t rc = H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, count > 0 ? data.data_ptr<float>() : nullptr);
  H5Pclose(dxpl);
  H5Sclose(mspace);
  H5Sclose(fspace);
  H5Dclose(dset);
  if (rc < 0) throw Error(where, "cannot write dataset " + name);
}

}  // namespace

std::string save_checkpoint(const std::string& root_s, int64_t step, const dist::ShardedParameters& params,
                            const std::vector<models::UnitLayout>& layout, const nlohmann::json& meta, int64_t keep) {
  const fs::path root(root_s);
  if (layout.size() != params.num_units()) throw Error("save_checkpoint", "the layout does not describe the sharded units");
  for (size_t u = 0; u < layout.size(); ++u) {
    const dist::UnitShard s = params.unit_shard(u);
    if (layout[u].unit != s.name || layout[u].numel != s.numel)
      throw Error("save_checkpoint", "layout unit " + layout[u].unit + " does not match sharded unit " + s.name);
  }
  const fs::path final_dir = root / step_name(step);
  const fs::path tmp = root / (".tmp-" + step_name(step));
  const int rank = params.rank();
  // Rank 0 decides whether this step is already saved (a resumed run reaching its own start) and
  // prepares the directory; everyone learns the decision.
  int exists = 0;
  if (rank == 0) {
    exists = fs::exists(final_dir / "COMPLETE") ? 1 : 0;
    fs::create_directories(root);
    for (const auto& e : fs::directory_iterator(root))  // leftovers of a run killed mid-save
      if (e.path().filename().string().rfind(".tmp-", 0) == 0) remove_tree(e.path());
    if (!exists) fs::create_directories(tmp);
  }
  MPI_Bcast(&exists, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (exists) return final_dir.string();

  // Parallel HDF5: every rank writes its own slices of every unit, collectively. Memory: nothing
  // beyond the shards themselves; bandwidth: every rank's.
  const std::string h5 = (tmp / "state.h5").string();
  nlohmann::json units = nlohmann::json::array();
  {
    std::lock_guard<std::mutex> lock(data::hdf5_mutex());  // (the loaders' threads wait meanwhile)
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL);
    H5File file;
    file.id = H5Fcreate(h5.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file.id < 0) throw Error(h5, "cannot create the checkpoint file");
    for (size_t u = 0; u < params.num_units(); ++u) {
      const dist::UnitShard s = params.unit_shard(u);
      units.push_back({{"name", s.name}, {"numel", s.numel}});
      const std::string g = "units/" + s.name + "/";
      write_slices(file.id, g + "params", s, s.params, rank, h5);
      write_slices(file.id, g + "m", s, s.m, rank, h5);
      write_slices(file.id, g + "v", s, s.v, rank, h5);
      if (s.ema.defined()) write_slices(file.id, g + "ema", s, s.ema, rank, h5);
    }
    const herr_t rc = H5Fclose(file.id);
    file.id = -1;
    if (rc < 0) throw Error(h5, "cannot close the checkpoint file");
  }
  if (rank == 0) {
    fsync_path(h5);
    nlohmann::json m = meta;
    m["step"] = step;
    m["saved_by_world_size"] = params.world();
    m["units"] = units;
    m["optimizer_steps"] = params.steps();
    m["layout"] = layout_to_json(layout);
    m["format"] = "dtrainer-checkpoint";
    m["format_version"] = kCheckpointFormatVersion;
    write_text(tmp / "meta.json", m.dump(2));
    write_text(tmp / "COMPLETE", "step " + std::to_string(step) + "\n");
    fs::rename(tmp, final_dir);
    fsync_path(root);
    auto all = complete_checkpoints(root);
    for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) remove_tree(all[i].second);
  }
  MPI_Barrier(MPI_COMM_WORLD);  // published before anyone goes on (or exits)
  return final_dir.string();
}

std::optional<std::string> latest_checkpoint(const std::string& root) {
  auto all = complete_checkpoints(root);
  if (all.empty()) return std::nullopt;
  return all.back().second.string();
}

nlohmann::json load_checkpoint(const std::string& dir, dist::ShardedParameters& params) {
  const CheckpointReader ck(dir);
  const auto units = ck.units();
  if (units.size() != params.num_units())
    throw Error(ck.state_file(), "the checkpoint has " + std::to_string(units.size()) + " units, the model " +
                                     std::to_string(params.num_units()) + " (a different model?)");
  for (size_t u = 0; u < params.num_units(); ++u) {
    const dist::UnitShard mine = params.unit_shard(u);
    if (units[u].first != mine.name)
      throw Error(ck.state_file(), "unit " + std::to_string(u) + " is '" + units[u].first + "' in the checkpoint, '" + mine.name +
                                       "' in the model");
    const torch::Tensor p = ck.read(mine.name, "params", mine.numel);
    const torch::Tensor m = ck.read(mine.name, "m", mine.numel);
    const torch::Tensor v = ck.read(mine.name, "v", mine.numel);
    torch::Tensor ema;
    if (mine.ema.defined())  // a checkpoint saved without EMA: the EMA starts from the weights
      ema = ck.has(mine.name, "ema") ? ck.read(mine.name, "ema", mine.numel) : p.clone();
    params.load_unit(u, p, m, v, ema);
  }
  params.set_steps(ck.meta().value("optimizer_steps", int64_t{0}));
  return ck.meta();
}

CheckpointReader::CheckpointReader(const std::string& dir) : dir_(dir), h5_((fs::path(dir) / "state.h5").string()) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) throw Error(dir, "no such checkpoint directory");
  if (!fs::exists(d / "COMPLETE")) throw Error(dir, "not a complete checkpoint (no COMPLETE marker)");
  {
    std::ifstream in(d / "meta.json");
    if (!in) throw Error((d / "meta.json").string(), "cannot open");
    try {
      in >> meta_;
    } catch (const std::exception& e) {
      throw Error((d / "meta.json").string(), std::string("not valid JSON: ") + e.what());
    }
  }
  if (!meta_.is_object() || !meta_.contains("units") || !meta_["units"].is_array())
    throw Error((d / "meta.json").string(), "has no 'units' list (not a dtrainer checkpoint?)");
  if (meta_.contains("format_version")) {
    if (!meta_["format_version"].is_number_integer()) throw Error((d / "meta.json").string(), "format_version is not an integer");
    version_ = meta_["format_version"].get<int>();
    if (version_ < 1 || version_ > kCheckpointFormatVersion)
      throw Error((d / "meta.json").string(), "checkpoint format " + std::to_string(version_) + "; this dtrainer reads formats 1 to " +
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
    if (!u.is_object() || !u.contains("name") || !u.contains("numel") || !u["name"].is_string() || !u["numel"].is_number_integer())
      throw Error(dir_ + "/meta.json", "malformed 'units' entry " + u.dump());
    out.emplace_back(u["name"].get<std::string>(), u["numel"].get<int64_t>());
  }
  return out;
}

std::vector<models::UnitLayout> CheckpointReader::layout() const {
  const std::string where = dir_ + "/meta.json";
  if (!meta_.contains("layout"))
    throw Error(where, "has no parameter layout (saved by a dtrainer older than dtckpt); resume it with this dtrainer and "
                       "save again");
  std::vector<models::UnitLayout> l = layout_from_json(meta_["layout"], where);
  const auto u = units();
  if (l.size() != u.size()) throw Error(where, "the layout lists " + std::to_string(l.size()) + " units, 'units' " + std::to_string(u.size()));
  for (size_t i = 0; i < l.size(); ++i)
    if (l[i].unit != u[i].first || l[i].numel != u[i].second)
      throw Error(where, "layout unit " + l[i].unit + " (" + std::to_string(l[i].numel) + " elements) does not match unit " +
                             u[i].first + " (" + std::to_string(u[i].second) + ")");
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

torch::Tensor CheckpointReader::read(const std::string& unit, const std::string& kind, int64_t numel) const {
  std::lock_guard<std::mutex> lock(data::hdf5_mutex());
  return read_vector(file_, "units/" + unit + "/" + kind, numel, h5_);
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
    if (!u.is_object() || !u.contains("unit") || !u["unit"].is_string() || !u.contains("tensors") || !u["tensors"].is_array())
      throw Error(where, "malformed layout entry (want {unit, tensors})");
    models::UnitLayout l{u["unit"].get<std::string>(), {}, 0};
    for (const auto& t : u["tensors"]) {
      if (!t.is_array() || t.size() != 2 || !t[0].is_string() || !t[1].is_array())
        throw Error(where, "unit " + l.unit + ": malformed tensor entry " + t.dump() + " (want [name, shape])");
      models::TensorLayout e{t[0].get<std::string>(), {}, l.numel};
      for (const auto& d : t[1]) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0) throw Error(where, "tensor " + e.name + ": bad shape " + t[1].dump());
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
