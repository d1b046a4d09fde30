#include "dtrainer/dist/host_collectives.h"
#include "dtrainer/ckpt/checkpoint.h"

#include <hdf5.h>
#include <mpi.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/core/library_cleanup.h"
#include "dtrainer/core/remove_tree.h"
#include "dtrainer/dist/agreement.h"
#include "dtrainer/dist/watchdog.h"
#include "dtrainer/core/step_name.h"
#include "dtrainer/data/hdf5_lock.h"

namespace fs = std::filesystem;

namespace dtrainer::ckpt {
namespace {

std::vector<std::pair<int64_t, fs::path>> complete_checkpoint_paths(const fs::path& root) {
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

bool same_directory(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec);
}

// CRC-32 (zlib's) of a float tensor's bytes, in pieces zlib's length type can take.
uint32_t crc_of(const void* data, int64_t bytes, uint32_t crc = 0) {
  const auto* p = static_cast<const Bytef*>(data);
  while (bytes > 0) {
    const int64_t n = std::min<int64_t>(bytes, int64_t{1} << 30);
    crc = static_cast<uint32_t>(crc32_z(crc, p, static_cast<z_size_t>(n)));
    p += n;
    bytes -= n;
  }
  return crc;
}

std::string crc_text(uint32_t crc) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "crc32:%08x", crc);
  return buf;
}

// The innermost messages of HDF5's error stack (the library's own cause: "No space left on
// device", an MPI-IO error), for messages that say why, not only what.
herr_t collect_h5_error(unsigned n, const H5E_error2_t* e, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (n < 3 && e->desc && *e->desc) *text += std::string(text->empty() ? "" : "; ") + e->desc;
  return 0;
}
std::string h5_cause() {
  const int err = errno;  // (before anything else can touch it: the system's reason, when there is one)
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_h5_error, &text);
  if (err == ENOSPC || err == EDQUOT || err == EIO || err == EROFS || err == EFBIG)
    text += (text.empty() ? "" : "; ") + errno_message(err);
  return text.empty() ? "HDF5 gave no reason" : text;
}

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
    throw Error(where, "dataset " + name + " has " + std::to_string(std::max<int64_t>(n, 0)) +
                           " elements where the model's unit has " + std::to_string(numel) +
                           " (the checkpoint's model differs from this run's)");
  }
  torch::Tensor t = torch::empty({numel});
  const herr_t rc = H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr<float>());
  H5Dclose(dset);
  if (rc < 0) throw Error(where, "cannot read dataset " + name + ": " + h5_cause());
  return t;
}

// This rank's part of one unit's dataset: [rank * shard, rank * shard + shard) clipped to numel
// (the padding is not stored), as (first element, count).
std::pair<int64_t, int64_t> my_slice(const dist::UnitShard& s, int rank) {
  const int64_t first = std::min<int64_t>(rank * s.shard, s.numel);
  return {first, std::max<int64_t>(0, std::min<int64_t>(s.shard, s.numel - first))};
}

// Rank 0: creates `path` with one contiguous fp32 dataset per name, its storage allocated at
// creation and never filled (the ranks write every byte of it), closes it, and reserves the file's
// bytes on disk where the file system can (so a full disk is found here, not in the ranks' writes).
// Returns each dataset's byte offset in the file.
std::vector<uint64_t> lay_out_state_file(
    const std::string& path, const std::vector<std::string>& names,
    const std::vector<std::pair<const dist::UnitShard*, const torch::Tensor*>>& slices) {
  std::lock_guard<std::mutex> lock(data::hdf5_mutex());  // (the loaders' threads wait meanwhile)
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file < 0) throw Error(path, "cannot create the checkpoint file: " + h5_cause());
  std::vector<uint64_t> offsets;
  std::string failure;
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  H5Pset_layout(dcpl, H5D_CONTIGUOUS);
  H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
  H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
  for (size_t d = 0; d < names.size() && failure.empty(); ++d) {
    const hsize_t n = static_cast<hsize_t>(slices[d].first->numel);
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t dset = H5Dcreate2(file, names[d].c_str(), H5T_IEEE_F32LE, space, lcpl, dcpl, H5P_DEFAULT);
    H5Sclose(space);
    const haddr_t at = dset >= 0 ? H5Dget_offset(dset) : HADDR_UNDEF;
    if (dset >= 0) H5Dclose(dset);
    if (at == HADDR_UNDEF) failure = "cannot create dataset " + names[d] + ": " + h5_cause();
    offsets.push_back(static_cast<uint64_t>(at));
  }
  H5Pclose(dcpl);
  H5Pclose(lcpl);
  const herr_t closed = H5Fclose(file);
  if (closed < 0) forbid_library_cleanup("HDF5 could not close " + path);
  if (!failure.empty()) throw Error(path, failure);
  if (closed < 0)
    throw Error(
        path, "cannot write the checkpoint file's structure: " + diagnose_write_failure(fs::path(path).parent_path()));
  // Reserve the data's bytes (fallocate: no zeros written; where a file system cannot, the
  // free-space check made before stands in).
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, "cannot open: " + errno_message(errno));
  struct stat st {};
  const int rc = ::fstat(fd, &st) == 0 && st.st_size > 0 ? ::fallocate(fd, 0, 0, st.st_size) : 0;
  const int err = rc != 0 ? errno : 0;
  ::close(fd);
  if (rc != 0 && err != EOPNOTSUPP && err != ENOSYS)
    throw Error(path, "cannot reserve " + format_bytes(static_cast<double>(st.st_size)) +
                          " for the checkpoint: " + errno_message(err));
  return offsets;
}

// Every rank: its slice of every dataset at the dataset's offset, synced; returns (crc, bytes) of
// each slice. Throws (locally) naming the file, the dataset and the cause.
std::vector<uint64_t> write_my_slices(
    const std::string& path, const std::vector<std::string>& names,
    const std::vector<std::pair<const dist::UnitShard*, const torch::Tensor*>>& slices,
    const std::vector<uint64_t>& offsets, int rank) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, "cannot open for writing: " + errno_message(errno));
  std::vector<uint64_t> sums;
  std::string failure;
  for (size_t d = 0; d < names.size() && failure.empty(); ++d) {
    const auto [first, count] = my_slice(*slices[d].first, rank);
    // (shards on a GPU: a host copy; the host is little-endian, as the datasets are: F32LE)
    const torch::Tensor data = slices[d].second->narrow(0, 0, count).to(torch::kCPU).contiguous();
    const auto* p = static_cast<const char*>(data.data_ptr());
    int64_t left = count * 4;
    off_t at = static_cast<off_t>(offsets[d] + static_cast<uint64_t>(first) * 4);
    while (left > 0) {
      const ssize_t n = ::pwrite(fd, p, static_cast<size_t>(std::min<int64_t>(left, int64_t{1} << 30)), at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        failure = "cannot write dataset " + names[d] + " (elements " + std::to_string(first) + " to " +
                  std::to_string(first + count) + "): " + errno_message(n < 0 ? errno : EIO);
        break;
      }
      p += n;
      left -= n;
      at += n;
    }
    sums.push_back(count > 0 ? crc_of(data.data_ptr(), count * 4) : 0u);
    sums.push_back(static_cast<uint64_t>(count * 4));
  }
  if (failure.empty() && ::fsync(fd) != 0) failure = "cannot sync to disk: " + errno_message(errno);
  if (::close(fd) != 0 && failure.empty()) failure = "cannot write (close): " + errno_message(errno);
  if (!failure.empty()) throw Error(path, failure);
  return sums;
}

// Free space for `bytes` more on the file system of `dir`, or an Error saying what would help.
void check_free_space(const fs::path& dir, int64_t bytes) {
  struct statvfs st {};
  if (statvfs(dir.c_str(), &st) != 0) return;  // (unknown: the writes will tell)
  const double free_bytes = static_cast<double>(st.f_bavail) * static_cast<double>(st.f_frsize);
  const double need = static_cast<double>(bytes) * 1.02 + (1 << 20);
  if (free_bytes < need)
    throw Error(dir.string(), "not enough free space for the checkpoint: it needs " + format_bytes(need) +
                                  ", the file system has " + format_bytes(free_bytes) +
                                  " free (free space, lower keep_ckpts, or choose another --run-dir)");
}

// Moves a checkpoint aside into <root>/superseded/ (a unique name there); returns the new path.
fs::path move_aside(const fs::path& root, const fs::path& dir) {
  const fs::path aside_root = root / "superseded";
  fs::create_directories(aside_root);
  fs::path to = aside_root / dir.filename();
  for (int i = 1; fs::exists(to); ++i) to = aside_root / (dir.filename().string() + "." + std::to_string(i));
  fs::rename(dir, to);
  return to;
}

}  // namespace

std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  for (const auto& [step, p] : complete_checkpoint_paths(root)) out.emplace_back(step, p.string());
  return out;
}

namespace {
SaveResult save(const std::string& root_s, int64_t step, const dist::ShardedParameters& params,
                const std::vector<models::UnitLayout>& layout, const nlohmann::json& meta, const SaveOptions& options);
}

SaveResult save_checkpoint(const std::string& root, int64_t step, const dist::ShardedParameters& params,
                           const std::vector<models::UnitLayout>& layout, const nlohmann::json& meta,
                           const SaveOptions& options) {
  try {
    return save(root, step, params, layout, meta, options);
  } catch (const CollectiveError& e) {
    // (what is left to resume from: every rank says the same, from the same directory listing)
    const auto all = complete_checkpoint_paths(root);
    const std::string left = all.empty()
                                 ? "; this run has no complete checkpoint yet"
                                 : "; the newest complete checkpoint, " + all.back().second.string() + ", is untouched";
    throw CollectiveError(e.where(), "checkpoint of step " + std::to_string(step) + " failed: " + e.detail() + left,
                          e.rank(), e.failures());
  }
}

namespace {
SaveResult save(const std::string& root_s, int64_t step, const dist::ShardedParameters& params,
                const std::vector<models::UnitLayout>& layout, const nlohmann::json& meta, const SaveOptions& options) {
  const MPI_Comm comm = MPI_COMM_WORLD;
  const fs::path root(root_s);
  const fs::path final_dir = root / step_name(step);
  const fs::path tmp = root / (".tmp-" + step_name(step));
  const int rank = params.rank();
  SaveResult result;
  result.dir = final_dir.string();

  // 1. Rank 0 checks and prepares; everyone learns the outcome. Nothing is written when the step
  //    is the resumed checkpoint itself, or when the file system cannot hold the new one.
  int64_t bytes = 0;
  for (size_t u = 0; u < params.num_units(); ++u) {
    const dist::UnitShard s = params.unit_shard(u);
    bytes += s.numel * 4 * (s.ema.defined() ? 4 : 3);
  }
  int already = 0;
  const auto remove_tmp = [&] {
    if (rank == 0) try_remove_tree(tmp);
  };
  try {
    dist::agree(comm, [&] {
      if (layout.size() != params.num_units())
        throw Error("save_checkpoint", "the layout does not describe the sharded units");
      for (size_t u = 0; u < layout.size(); ++u) {
        const dist::UnitShard s = params.unit_shard(u);
        if (layout[u].unit != s.name || layout[u].numel != s.numel)
          throw Error("save_checkpoint", "layout unit " + layout[u].unit + " does not match sharded unit " + s.name);
      }
      if (rank != 0) return;
      if (!options.resumed_from.empty() && fs::exists(final_dir / "COMPLETE") &&
          same_directory(final_dir, options.resumed_from)) {
        already = 1;
        return;
      }
      fs::create_directories(root);
      for (const auto& e : fs::directory_iterator(root))  // leftovers of a run killed mid-save
        if (e.path().filename().string().rfind(".tmp-", 0) == 0) remove_tree(e.path());
      fs::create_directories(tmp);
      check_free_space(tmp, bytes);
    });
  } catch (const CollectiveError&) {
    remove_tmp();
    throw;
  }
  std::vector<int64_t> flag = {already};
  dist::broadcast_host(comm, flag);
  if (flag[0]) {
    result.already_saved = true;
    return result;
  }

  // 2. The file: rank 0 lays out state.h5 alone (serial HDF5: every dataset contiguous and
  //    allocated, nothing written into it), closes it, and reserves its bytes on disk; the ranks
  //    learn the datasets' file offsets. Then every rank writes its own slice of every dataset
  //    with plain pwrite (no gather: memory beyond the shards none, bandwidth every rank's).
  //    No step is collective inside a library: parallel HDF5's collective writes and close were
  //    measured to hang for good when a write failed on one rank (the ranks then run different
  //    collectives inside HDF5 and MPI-IO); here every failure is local, and agreed on.
  const std::string h5 = (tmp / "state.h5").string();
  nlohmann::json units = nlohmann::json::array();
  std::vector<std::string> names;
  std::vector<std::pair<const dist::UnitShard*, const torch::Tensor*>> slices;
  std::vector<dist::UnitShard> shards;
  shards.reserve(params.num_units());
  for (size_t u = 0; u < params.num_units(); ++u) shards.push_back(params.unit_shard(u));
  for (const auto& s : shards) {
    units.push_back({{"name", s.name}, {"numel", s.numel}});
    std::vector<std::pair<const char*, const torch::Tensor*>> kinds = {{"params", &s.params}, {"m", &s.m}, {"v", &s.v}};
    if (s.ema.defined()) kinds.push_back({"ema", &s.ema});
    for (const auto& [kind, t] : kinds) {
      names.push_back("units/" + s.name + "/" + kind);
      slices.push_back({&s, t});
    }
  }
  std::vector<uint64_t> offsets(names.size(), 0);
  std::vector<uint64_t> sums;  // (crc, bytes) of this rank's slice, per dataset
  auto cleanup = [&] {
    if (rank == 0) try_remove_tree(tmp);
  };
  try {
    dist::agree(comm, [&] {
      if (rank == 0) offsets = lay_out_state_file(h5, names, slices);
    });
    dist::broadcast_host(comm, offsets);
    dist::agree(comm, [&] { sums = write_my_slices(h5, names, slices, offsets, rank); });
  } catch (const CollectiveError&) {
    cleanup();
    throw;
  }

  // 3. Checksums: rank 0 combines the ranks' slice CRCs in rank order (the dataset's byte order).
  const std::vector<uint64_t> all = dist::gather_host(comm, sums);

  // 4. Rank 0 publishes: manifest, COMPLETE, rename; then moves aside newer checkpoints of an
  //    abandoned trajectory and rotates old ones.
  try {
    dist::agree(comm, [&] {
      if (rank != 0) return;
      nlohmann::json checksums = nlohmann::json::object();
      for (size_t d = 0; d < names.size(); ++d) {
        uint32_t crc = 0;
        for (int r = 0; r < params.world(); ++r) {
          const uint64_t* rs = all.data() + static_cast<size_t>(r) * sums.size();
          crc = static_cast<uint32_t>(
              crc32_combine(crc, static_cast<uLong>(rs[2 * d]), static_cast<z_off_t>(rs[2 * d + 1])));
        }
        checksums[names[d]] = crc_text(crc);
      }
      nlohmann::json m = meta;
      m["step"] = step;
      m["saved_by_world_size"] = params.world();
      m["units"] = units;
      m["optimizer_steps"] = params.steps();
      m["layout"] = layout_to_json(layout);
      m["checksums"] = checksums;
      m["format"] = "dtrainer-checkpoint";
      m["format_version"] = kCheckpointFormatVersion;
      write_file_atomic(tmp / "meta.json", m.dump(2));
      write_file_atomic(tmp / "COMPLETE", "step " + std::to_string(step) + "\n");
      result.bytes = static_cast<int64_t>(fs::file_size(h5));
      if (fs::exists(final_dir)) {  // another trajectory's step_N: the new one replaces it
        const fs::path old = root / (".old-" + step_name(step));
        remove_tree(old);
        fs::rename(final_dir, old);
        std::error_code ec;
        fs::rename(tmp, final_dir, ec);
        if (ec) {
          fs::rename(old, final_dir);
          throw Error(final_dir.string(), "cannot move the new checkpoint into place: " + ec.message());
        }
        remove_tree(old);
        result.replaced = true;
      } else {
        fs::rename(tmp, final_dir);
      }
      fsync_path(root);
    });
  } catch (const CollectiveError&) {
    cleanup();
    throw;
  }
  if (rank == 0) {
    // Housekeeping after the new checkpoint is safe: a failure here loses nothing, so it is
    // reported, not thrown.
    try {
      for (const auto& [s, dir] : complete_checkpoint_paths(root))
        if (s > step) result.superseded.push_back(move_aside(root, dir).string());
      auto kept = complete_checkpoint_paths(root);
      for (size_t i = 0; i + static_cast<size_t>(std::max<int64_t>(options.keep, 1)) < kept.size(); ++i) {
        remove_tree(kept[i].second);
        result.removed.push_back(kept[i].second.string());
      }
    } catch (const std::exception& e) {
      result.warnings.push_back(std::string("checkpoint rotation: ") + e.what());
    }
  }
  dist::barrier_host(comm);  // published before anyone goes on (or exits)
  return result;
}
}  // namespace

std::optional<std::string> latest_checkpoint(const std::string& root) {
  auto all = complete_checkpoint_paths(root);
  if (all.empty()) return std::nullopt;
  return all.back().second.string();
}

namespace {

// The first difference between the checkpoint's parameter layout and the model's, in words.
std::string layout_difference(const std::vector<models::UnitLayout>& saved,
                              const std::vector<models::UnitLayout>& model) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& u : model)
    for (const auto& t : u.tensors) shapes[t.name] = t.shape;
  size_t saved_tensors = 0;
  for (const auto& u : saved)
    for (const auto& t : u.tensors) {
      ++saved_tensors;
      const auto it = shapes.find(t.name);
      if (it == shapes.end()) return "its tensor '" + t.name + "' is not in this run's model";
      if (it->second != t.shape)
        return "tensor '" + t.name + "' is " + c10::str(c10::IntArrayRef(t.shape)) + " in the checkpoint, " +
               c10::str(c10::IntArrayRef(it->second)) + " in this run's model";
    }
  if (saved_tensors != shapes.size())
    return "the checkpoint has " + std::to_string(saved_tensors) + " tensors, this run's model " +
           std::to_string(shapes.size());
  return "";
}

}  // namespace

nlohmann::json load_checkpoint(const std::string& dir, dist::ShardedParameters& params,
                               const std::vector<models::UnitLayout>* model_layout) {
  const CheckpointReader ck(dir);
  if (model_layout && ck.meta().contains("layout")) {
    const std::string diff = layout_difference(ck.layout(), *model_layout);
    if (!diff.empty())
      throw Error(dir,
                  "was saved by a different model: " + diff +
                      " (resume it with the model settings it was saved with: model, model_set, the data's shapes)");
  }
  const auto units = ck.units();
  if (units.size() != params.num_units())
    throw Error(ck.state_file(), "the checkpoint has " + std::to_string(units.size()) + " units, the model " +
                                     std::to_string(params.num_units()) + " (saved by a different model)");
  for (size_t u = 0; u < params.num_units(); ++u) {
    const dist::UnitShard mine = params.unit_shard(u);
    if (units[u].first != mine.name)
      throw Error(ck.state_file(), "unit " + std::to_string(u) + " is '" + units[u].first + "' in the checkpoint, '" +
                                       mine.name + "' in the model");
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
