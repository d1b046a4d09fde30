#include "dtrainer/ckpt/phema_snapshot.h"

#include <hdf5.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <torch/torch.h>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/remove_tree.h"
#include "dtrainer/data/hdf5_lock.h"
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/host_collectives.h"
#include "dtrainer/parallel/power_ema.h"
#include "state_file.h"

namespace fs = std::filesystem;

namespace dtrainer::ckpt {
namespace {

const char* dtype_name(torch::ScalarType t) {
  return t == torch::kFloat16 ? "fp16" : t == torch::kBFloat16 ? "bf16" : "fp32";
}

torch::ScalarType parse_dtype(const std::string& name, const std::string& where) {
  if (name == "fp16") return torch::kFloat16;
  if (name == "bf16") return torch::kBFloat16;
  if (name == "fp32") return torch::kFloat32;
  throw Error(where, "unknown snapshot dtype '" + name + "' (fp16, bf16 or fp32)");
}

bool is_profile(const std::string& average) { return average.rfind("phema_", 0) == 0; }

std::string dataset(const std::string& unit, const std::string& profile) { return "units/" + unit + "/" + profile; }

}  // namespace

std::string phema_snapshot_name(int64_t images) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "img_%012lld", static_cast<long long>(images));
  return buf;
}

std::vector<std::pair<int64_t, std::string>> complete_phema_snapshots(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  for (const auto& [images, dir] : complete_numbered_dirs(root, "img_")) out.emplace_back(images, dir.string());
  return out;
}

std::vector<std::string> supersede_phema_snapshots_after(const std::string& root, int64_t images) {
  std::vector<std::string> moved;
  for (const auto& [n, dir] : complete_phema_snapshots(root))
    if (n > images) moved.push_back(move_aside(root, dir).string());
  return moved;
}

PhemaSnapshotSave save_phema_snapshot(const std::string& root_s, int64_t images, int64_t step,
                                      const parallel::ShardedParameters& params,
                                      const std::vector<models::UnitLayout>& layout, torch::ScalarType dtype,
                                      const nlohmann::json& run, const std::string& config_toml, MPI_Comm comm) {
  const fs::path root(root_s);
  const std::string name = phema_snapshot_name(images);
  const fs::path final_dir = root / name, tmp = root / (".tmp-" + name);
  const int rank = params.rank();
  PhemaSnapshotSave result;
  result.dir = final_dir.string();
  const std::vector<std::string>& averages = params.average_names();
  std::vector<size_t> profiles;  // indices of the phema_* averages
  for (size_t a = 0; a < averages.size(); ++a)
    if (is_profile(averages[a])) profiles.push_back(a);
  const int64_t element = dtype == torch::kFloat32 ? 4 : 2;
  const hid_t type = h5_float_type(dtype);  // (outside the HDF5 lock, which lay_out_state_file takes)
  auto cleanup = [&] {
    if (rank == 0) try_remove_tree(tmp);
  };

  // 1. This rank's slices in the storage dtype, checked for overflow; rank 0 prepares the directory.
  std::vector<parallel::UnitShard> shards;
  for (size_t u = 0; u < params.num_units(); ++u) shards.push_back(params.unit_shard(u));
  std::vector<torch::Tensor> stored;  // one per (unit, profile)
  std::vector<std::string> names;
  StateSlices slices;
  int64_t bytes = 0;
  try {
    parallel::agree(comm, [&] {
      if (profiles.empty()) throw Error("phema snapshot", "the run keeps no power-function profiles (ema = \"phema\")");
      if (layout.size() != shards.size())
        throw Error("phema snapshot", "the layout does not describe the sharded units");
      stored.reserve(shards.size() * profiles.size());
      for (const auto& s : shards) {
        const auto [first, count] = my_slice(s, rank);
        (void)first;
        for (const size_t a : profiles) {
          torch::Tensor t = s.averages[a].narrow(0, 0, count).to(torch::kCPU).to(dtype).contiguous();
          const int64_t bad = (~torch::isfinite(t)).sum().item<int64_t>();
          if (bad > 0) {
            const bool was_finite = torch::isfinite(s.averages[a].narrow(0, 0, count)).all().item<bool>();
            throw Error(dataset(s.name, averages[a]),
                        std::to_string(bad) + (was_finite ? " values beyond " + std::string(dtype_name(dtype)) +
                                                                "'s range (set phema_snapshot_dtype = bf16 or fp32)"
                                                          : " non-finite values in the profile itself"));
          }
          stored.push_back(std::move(t));
          names.push_back(dataset(s.name, averages[a]));
          bytes += s.numel * element;
        }
      }
      for (size_t i = 0; i < names.size(); ++i) slices.push_back({&shards[i / profiles.size()], &stored[i]});
      if (rank != 0) return;
      fs::create_directories(root);
      for (const auto& e : fs::directory_iterator(root))  // leftovers of a run killed mid-save
        if (e.path().filename().string().rfind(".tmp-", 0) == 0) remove_tree(e.path());
      fs::create_directories(tmp);
    });
  } catch (const CollectiveError& e) {
    cleanup();
    throw CollectiveError(e.where(), "phema snapshot at " + std::to_string(images) + " images failed: " + e.detail(),
                          e.rank(), e.failures());
  }

  // 2. The file: laid out by rank 0, each rank's slice written by it; checksums combined by rank 0.
  const std::string h5 = (tmp / "state.h5").string();
  std::vector<uint64_t> offsets(names.size(), 0), sums;
  try {
    parallel::agree(comm, [&] {
      if (rank == 0) offsets = lay_out_state_file(h5, names, slices, type);
    });
    parallel::broadcast_host(comm, offsets);
    parallel::agree(comm, [&] { sums = write_my_slices(h5, names, slices, offsets, rank); });
  } catch (const CollectiveError& e) {
    cleanup();
    throw CollectiveError(e.where(), "phema snapshot at " + std::to_string(images) + " images failed: " + e.detail(),
                          e.rank(), e.failures());
  }
  const std::vector<uint64_t> all = parallel::gather_host(comm, sums);

  // 3. Rank 0 publishes: manifest, COMPLETE, rename (replacing an earlier attempt's snapshot).
  try {
    parallel::agree(comm, [&] {
      if (rank != 0) return;
      const nlohmann::json checksums = combine_checksums(names, all, params.world());
      nlohmann::json units = nlohmann::json::array(), profile_list = nlohmann::json::array();
      for (const auto& s : shards) units.push_back({{"name", s.name}, {"numel", s.numel}});
      const std::vector<double>& sigmas = params.config().phema_sigma_rel;
      for (const double sigma : sigmas)
        profile_list.push_back(
            {{"name", parallel::phema_name(sigma)}, {"sigma_rel", sigma}, {"gamma", parallel::phema_gamma(sigma)}});
      nlohmann::json m = {{"format", "dtrainer-phema-snapshot"},
                          {"format_version", kPhemaSnapshotFormatVersion},
                          {"images", images},
                          {"step", step},
                          {"dtype", dtype_name(dtype)},
                          {"profiles", profile_list},
                          {"units", units},
                          {"layout", layout_to_json(layout)},
                          {"checksums", checksums},
                          {"saved_by_world_size", params.world()}};
      m["run"] = run;
      m["config_toml"] = config_toml;
      write_file_atomic(tmp / "meta.json", m.dump(2));
      write_file_atomic(tmp / "COMPLETE", name + "\n");
      result.bytes = static_cast<int64_t>(fs::file_size(h5));
      if (fs::exists(final_dir)) {
        remove_tree(final_dir);
        result.replaced = true;
      }
      fs::rename(tmp, final_dir);
      fsync_path(root);
    });
  } catch (const CollectiveError& e) {
    cleanup();
    throw CollectiveError(e.where(), "phema snapshot at " + std::to_string(images) + " images failed: " + e.detail(),
                          e.rank(), e.failures());
  }
  parallel::barrier_host(comm);
  return result;
}

// ---- Reading ---------------------------------------------------------------------------------

PhemaSnapshotReader::PhemaSnapshotReader(const std::string& dir)
    : dir_(dir), h5_((fs::path(dir) / "state.h5").string()) {
  const std::string mj = (fs::path(dir) / "meta.json").string();
  meta_ = read_complete_manifest(dir, "phema snapshot");
  if (!meta_.is_object() || meta_.value("format", "") != "dtrainer-phema-snapshot")
    throw Error(mj, "not a dtrainer phema snapshot manifest");
  const int version = meta_.value("format_version", 0);
  if (version < 1 || version > kPhemaSnapshotFormatVersion)
    throw Error(mj, "snapshot format " + std::to_string(version) + "; this dtrainer reads format 1 to " +
                        std::to_string(kPhemaSnapshotFormatVersion));
  try {
    dtype_ = parse_dtype(meta_.at("dtype").get<std::string>(), mj);
    for (const auto& p : meta_.at("profiles"))
      profiles_.push_back(
          {p.at("name").get<std::string>(), p.at("sigma_rel").get<double>(), p.at("gamma").get<double>()});
    (void)meta_.at("images").get<int64_t>();
    (void)meta_.at("units").size();
  } catch (const nlohmann::json::exception& e) {
    throw Error(mj, std::string("malformed manifest: ") + e.what());
  }
  if (profiles_.empty()) throw Error(mj, "lists no profiles");
  std::lock_guard<std::mutex> lock(data::hdf5_mutex());
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  file_ = H5Fopen(h5_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file_ < 0) throw Error(h5_, "cannot open the snapshot file");
}

PhemaSnapshotReader::~PhemaSnapshotReader() {
  if (file_ < 0) return;
  std::lock_guard<std::mutex> lock(data::hdf5_mutex());
  H5Fclose(file_);
}

int64_t PhemaSnapshotReader::images() const { return meta_["images"].get<int64_t>(); }
int64_t PhemaSnapshotReader::step() const { return meta_.value("step", int64_t{0}); }

const nlohmann::json& PhemaSnapshotReader::run() const {
  static const nlohmann::json none = nlohmann::json::object();
  return meta_.contains("run") ? meta_["run"] : none;
}

std::vector<models::UnitLayout> PhemaSnapshotReader::layout() const {
  if (!meta_.contains("layout")) throw Error(dir_ + "/meta.json", "has no parameter layout");
  return layout_from_json(meta_["layout"], dir_ + "/meta.json");
}

std::string PhemaSnapshotReader::dataset_problem(const std::string& unit, const std::string& profile,
                                                 int64_t numel) const {
  const std::string name = dataset(unit, profile);
  std::lock_guard<std::mutex> lock(data::hdf5_mutex());
  if (H5Lexists(file_, "units", H5P_DEFAULT) <= 0 || H5Lexists(file_, ("units/" + unit).c_str(), H5P_DEFAULT) <= 0 ||
      H5Lexists(file_, name.c_str(), H5P_DEFAULT) <= 0)
    return name + ": missing";
  const hid_t dset = H5Dopen2(file_, name.c_str(), H5P_DEFAULT);
  const int64_t n = vector_length(dset);
  const hid_t t = H5Dget_type(dset);
  const size_t size = H5Tget_size(t);
  H5Tclose(t);
  H5Dclose(dset);
  if (n != numel) return name + ": " + std::to_string(n) + " elements, the manifest says " + std::to_string(numel);
  if (static_cast<int64_t>(size) != (dtype_ == torch::kFloat32 ? 4 : 2))
    return name + ": " + std::to_string(size) + "-byte elements, the manifest says " + dtype_name(dtype_);
  return "";
}

torch::Tensor PhemaSnapshotReader::read(const std::string& unit, const std::string& profile, int64_t numel,
                                        bool verify) const {
  const std::string problem = dataset_problem(unit, profile, numel);
  if (!problem.empty()) throw Error(h5_, problem);
  const std::string name = dataset(unit, profile);
  torch::Tensor raw = torch::empty({numel}, dtype_);
  {
    std::lock_guard<std::mutex> lock(data::hdf5_mutex());
    const hid_t dset = H5Dopen2(file_, name.c_str(), H5P_DEFAULT);
    const hid_t t = H5Dget_type(dset);  // the stored bytes as they are: no conversion
    const herr_t rc = H5Dread(dset, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data_ptr());
    H5Tclose(t);
    H5Dclose(dset);
    if (rc < 0) throw Error(h5_, "cannot read dataset " + name + ": " + h5_cause());
  }
  if (verify) {
    const auto& sums = meta_.value("checksums", nlohmann::json::object());
    if (!sums.contains(name) || !sums[name].is_string())
      throw Error(h5_, name + ": no checksum in meta.json (a manifest edited by hand, or mixed snapshots?)");
    const std::string got = crc_text(crc_of(raw.data_ptr(), numel * static_cast<int64_t>(raw.element_size())));
    if (got != sums[name].get<std::string>())
      throw Error(h5_, name + ": checksum mismatch (" + got + ", meta.json says " + sums[name].get<std::string>() +
                           "): the file is corrupt");
  }
  return raw.to(torch::kFloat32);
}

// ---- Validation ------------------------------------------------------------------------------

namespace {
std::string first_layout_difference(const std::vector<models::UnitLayout>& a,
                                    const std::vector<models::UnitLayout>& b) {
  if (a.size() != b.size()) return std::to_string(a.size()) + " units against " + std::to_string(b.size());
  for (size_t u = 0; u < a.size(); ++u) {
    if (a[u].unit != b[u].unit || a[u].numel != b[u].numel)
      return "unit " + a[u].unit + " (" + std::to_string(a[u].numel) + " elements) against " + b[u].unit + " (" +
             std::to_string(b[u].numel) + ")";
    if (a[u].tensors.size() != b[u].tensors.size()) return "unit " + a[u].unit + " has other tensors";
    for (size_t t = 0; t < a[u].tensors.size(); ++t)
      if (a[u].tensors[t].name != b[u].tensors[t].name || a[u].tensors[t].shape != b[u].tensors[t].shape)
        return "tensor '" + a[u].tensors[t].name + "' against '" + b[u].tensors[t].name + "'";
  }
  return "";
}
}  // namespace

std::string phema_snapshot_mismatch(const PhemaSnapshotReader& s, const PhemaSnapshotReader& reference) {
  const std::string diff = first_layout_difference(s.layout(), reference.layout());
  if (!diff.empty()) return "was saved by another model than " + reference.dir() + ": " + diff;
  if (s.run() != reference.run())
    return "belongs to another run than " + reference.dir() + " (" + s.run().dump() + " against " +
           reference.run().dump() + ")";
  return "";
}

std::vector<std::string> validate_phema_snapshots(const std::string& root, bool values) {
  std::vector<std::string> problems;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return {root + ": no phema snapshots (the run did not keep ema = \"phema\")"};
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("img_", 0) == 0 && !fs::exists(e.path() / "COMPLETE"))
      problems.push_back(e.path().string() + ": incomplete (no COMPLETE marker)");
  }
  const auto all = complete_phema_snapshots(root);
  if (all.empty()) {
    problems.push_back(root + ": no complete snapshot");
    return problems;
  }
  std::unique_ptr<PhemaSnapshotReader> newest;
  try {
    newest = std::make_unique<PhemaSnapshotReader>(all.back().second);
    newest->layout();
  } catch (const Error& e) {
    problems.push_back(e.what());
    return problems;
  }
  for (const auto& [images, dir] : all) {
    try {
      const PhemaSnapshotReader s(dir);
      if (s.images() != images)
        problems.push_back(dir + ": meta.json says " + std::to_string(s.images()) + " images, the name " +
                           std::to_string(images));
      const std::string mismatch = phema_snapshot_mismatch(s, *newest);
      if (!mismatch.empty()) {
        problems.push_back(dir + ": " + mismatch);
        continue;
      }
      for (const auto& u : s.layout())
        for (const auto& p : s.profiles()) {
          const std::string problem = s.dataset_problem(u.unit, p.name, u.numel);
          if (!problem.empty()) {
            problems.push_back(dir + ": " + problem);
            continue;
          }
          if (!values) continue;
          try {
            const torch::Tensor t = s.read(u.unit, p.name, u.numel);
            const int64_t bad = (~torch::isfinite(t)).sum().item<int64_t>();
            if (bad)
              problems.push_back(dir + ": " + dataset(u.unit, p.name) + ": " + std::to_string(bad) +
                                 " non-finite values");
          } catch (const Error& e) {
            problems.push_back(e.what());
          }
        }
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
  }
  return problems;
}

}  // namespace dtrainer::ckpt
