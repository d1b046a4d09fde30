#include "dtrainer/parallel/host_collectives.h"
#include "dtrainer/ckpt/checkpoint.h"

#include <hdf5.h>
#include <mpi.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

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
#include "dtrainer/parallel/agreement.h"
#include "dtrainer/parallel/watchdog.h"
#include "dtrainer/core/step_name.h"
#include "dtrainer/data/hdf5_lock.h"
#include "state_file.h"

namespace fs = std::filesystem;

namespace dtrainer::ckpt {
namespace {

bool same_directory(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::equivalent(a, b, ec);
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

}  // namespace

std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  for (const auto& [step, p] : complete_checkpoint_paths(root)) out.emplace_back(step, p.string());
  return out;
}

namespace {
SaveResult save(const std::string& root_s, int64_t step, const parallel::ShardedParameters& params,
                const std::vector<models::UnitLayout>& layout, const nlohmann::json& meta, const SaveOptions& options,
                MPI_Comm comm);
}

SaveResult save_checkpoint(const std::string& root, int64_t step, const parallel::ShardedParameters& params,
                           const std::vector<models::UnitLayout>& layout, const nlohmann::json& meta,
                           const SaveOptions& options, MPI_Comm comm) {
  try {
    return save(root, step, params, layout, meta, options, comm);
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
SaveResult save(const std::string& root_s, int64_t step, const parallel::ShardedParameters& params,
                const std::vector<models::UnitLayout>& layout, const nlohmann::json& meta, const SaveOptions& options,
                MPI_Comm comm) {
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
    const parallel::UnitShard s = params.unit_shard(u);
    bytes += s.numel * 4 * static_cast<int64_t>(3 + s.averages.size());
  }
  int already = 0;
  const auto remove_tmp = [&] {
    if (rank == 0) try_remove_tree(tmp);
  };
  try {
    parallel::agree(comm, [&] {
      if (layout.size() != params.num_units())
        throw Error("save_checkpoint", "the layout does not describe the sharded units");
      for (size_t u = 0; u < layout.size(); ++u) {
        const parallel::UnitShard s = params.unit_shard(u);
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
  parallel::broadcast_host(comm, flag);
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
  StateSlices slices;
  std::vector<parallel::UnitShard> shards;
  shards.reserve(params.num_units());
  for (size_t u = 0; u < params.num_units(); ++u) shards.push_back(params.unit_shard(u));
  for (const auto& s : shards) {
    units.push_back({{"name", s.name}, {"numel", s.numel}});
    std::vector<std::pair<const char*, const torch::Tensor*>> kinds = {{"params", &s.params}, {"m", &s.m}, {"v", &s.v}};
    for (size_t a = 0; a < s.averages.size(); ++a) kinds.push_back({params.average_names()[a].c_str(), &s.averages[a]});
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
    parallel::agree(comm, [&] {
      if (rank == 0) offsets = lay_out_state_file(h5, names, slices);
    });
    parallel::broadcast_host(comm, offsets);
    parallel::agree(comm, [&] { sums = write_my_slices(h5, names, slices, offsets, rank); });
  } catch (const CollectiveError&) {
    cleanup();
    throw;
  }

  // 3. Checksums: rank 0 combines the ranks' slice CRCs in rank order (the dataset's byte order).
  const std::vector<uint64_t> all = parallel::gather_host(comm, sums);

  // 4. Rank 0 publishes: manifest, COMPLETE, rename; then moves aside newer checkpoints of an
  //    abandoned trajectory and rotates old ones.
  try {
    parallel::agree(comm, [&] {
      if (rank != 0) return;
      const nlohmann::json checksums = combine_checksums(names, all, params.world());
      nlohmann::json m = meta;
      m["step"] = step;
      m["saved_by_world_size"] = params.world();
      m["units"] = units;
      m["averages"] = params.average_names();
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
  parallel::barrier_host(comm);  // published before anyone goes on (or exits)
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

nlohmann::json load_checkpoint(const std::string& dir, parallel::ShardedParameters& params,
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
    const parallel::UnitShard mine = params.unit_shard(u);
    if (units[u].first != mine.name)
      throw Error(ck.state_file(), "unit " + std::to_string(u) + " is '" + units[u].first + "' in the checkpoint, '" +
                                       mine.name + "' in the model");
    const torch::Tensor p = ck.read(mine.name, "params", mine.numel);
    const torch::Tensor m = ck.read(mine.name, "m", mine.numel);
    const torch::Tensor v = ck.read(mine.name, "v", mine.numel);
    std::vector<torch::Tensor> averages;
    for (const std::string& kind : params.average_names()) {
      if (ck.has(mine.name, kind)) {
        averages.push_back(ck.read(mine.name, kind, mine.numel));
      } else if (kind == "ema") {  // a checkpoint saved without EMA: the EMA starts from the weights
        averages.push_back(p.clone());
      } else {  // a power-function profile averages from image 0: it cannot start halfway
        const std::vector<std::string> saved = ck.averages();
        std::string list;
        for (const auto& s : saved) list += (list.empty() ? "" : ", ") + s;
        throw Error(ck.state_file(), "has no " + kind + " profile (it kept " + (list.empty() ? "none" : list) +
                                         "); a power-function EMA averages from the first image on, so it cannot "
                                         "start in a resumed run: resume with the phema_sigma_rel it was trained "
                                         "with, or start a new run");
      }
    }
    params.load_unit(u, p, m, v, averages);
  }
  params.set_steps(ck.meta().value("optimizer_steps", int64_t{0}));
  return ck.meta();
}

}  // namespace dtrainer::ckpt
