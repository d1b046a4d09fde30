#include "state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <regex>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/core/library_cleanup.h"
#include "dtrainer/data/hdf5_lock.h"

namespace fs = std::filesystem;

namespace dtrainer::ckpt {

nlohmann::json read_complete_manifest(const fs::path& dir, const std::string& what) {
  if (!fs::is_directory(dir)) throw Error(dir.string(), "no such " + what + " directory");
  if (!fs::exists(dir / "COMPLETE")) throw Error(dir.string(), "not a complete " + what + " (no COMPLETE marker)");
  const fs::path path = dir / "meta.json";
  std::ifstream in(path);
  if (!in) throw Error(path.string(), "cannot open");
  nlohmann::json meta;
  try {
    in >> meta;
  } catch (const std::exception& e) {
    throw Error(path.string(), std::string("not valid JSON: ") + e.what());
  }
  return meta;
}

fs::path move_aside(const fs::path& root, const fs::path& dir) {
  const fs::path aside_root = root / "superseded";
  fs::create_directories(aside_root);
  fs::path to = aside_root / dir.filename();
  for (int i = 1; fs::exists(to); ++i) to = aside_root / (dir.filename().string() + "." + std::to_string(i));
  fs::rename(dir, to);
  return to;
}

std::vector<std::pair<int64_t, fs::path>> complete_checkpoint_paths(const fs::path& root) {
  return complete_numbered_dirs(root, "step_");
}

std::vector<std::pair<int64_t, fs::path>> complete_numbered_dirs(const fs::path& root, const std::string& prefix) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  const std::regex name(prefix + "([0-9]+)");
  for (const auto& e : fs::directory_iterator(root)) {
    std::smatch m;
    const std::string n = e.path().filename().string();
    if (e.is_directory() && std::regex_match(n, m, name) && fs::exists(e.path() / "COMPLETE"))
      out.emplace_back(std::stoll(m[1]), e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// CRC-32 (zlib's) of a float tensor's bytes, in pieces zlib's length type can take.
uint32_t crc_of(const void* data, int64_t bytes, uint32_t crc) {
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

nlohmann::json combine_checksums(const std::vector<std::string>& names, const std::vector<uint64_t>& gathered,
                                 int world) {
  nlohmann::json checksums = nlohmann::json::object();
  const size_t per_rank = 2 * names.size();
  for (size_t d = 0; d < names.size(); ++d) {
    uint32_t crc = 0;
    for (int r = 0; r < world; ++r) {
      const uint64_t* rs = gathered.data() + static_cast<size_t>(r) * per_rank;
      crc =
          static_cast<uint32_t>(crc32_combine(crc, static_cast<uLong>(rs[2 * d]), static_cast<z_off_t>(rs[2 * d + 1])));
    }
    checksums[names[d]] = crc_text(crc);
  }
  return checksums;
}

// The innermost messages of HDF5's error stack (the library's own cause: "No space left on
// device", an MPI-IO error), for messages that say why, not only what.
namespace {
herr_t collect_h5_error(unsigned n, const H5E_error2_t* e, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (n < 3 && e->desc && *e->desc) *text += std::string(text->empty() ? "" : "; ") + e->desc;
  return 0;
}
}  // namespace
std::string h5_cause() {
  const int err = errno;  // (before anything else can touch it: the system's reason, when there is one)
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_h5_error, &text);
  if (err == ENOSPC || err == EDQUOT || err == EIO || err == EROFS || err == EFBIG)
    text += (text.empty() ? "" : "; ") + errno_message(err);
  return text.empty() ? "HDF5 gave no reason" : text;
}

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

std::pair<int64_t, int64_t> my_slice(const parallel::UnitShard& s, int rank) {
  const int64_t first = std::min<int64_t>(rank * s.shard, s.numel);
  return {first, std::max<int64_t>(0, std::min<int64_t>(s.shard, s.numel - first))};
}

hid_t h5_float_type(torch::ScalarType dtype) {
  auto make = [](size_t spos, size_t epos, size_t esize, size_t msize, size_t ebias) {
    std::lock_guard<std::mutex> lock(data::hdf5_mutex());
    const hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, spos, epos, esize, 0, msize);
    H5Tset_size(t, 2);
    H5Tset_precision(t, 16);
    H5Tset_ebias(t, ebias);
    return t;
  };
  switch (dtype) {
    case torch::kFloat32: return H5T_IEEE_F32LE;
    case torch::kFloat16: {
      static const hid_t half = make(15, 10, 5, 10, 15);
      return half;
    }
    case torch::kBFloat16: {
      static const hid_t bf16 = make(15, 7, 8, 7, 127);
      return bf16;
    }
    default: throw Error("state file", std::string("no HDF5 type for ") + c10::toString(dtype));
  }
}

std::vector<uint64_t> lay_out_state_file(const std::string& path, const std::vector<std::string>& names,
                                         const StateSlices& slices, hid_t type) {
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
    const hid_t dset = H5Dcreate2(file, names[d].c_str(), type, space, lcpl, dcpl, H5P_DEFAULT);
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

std::vector<uint64_t> write_my_slices(const std::string& path, const std::vector<std::string>& names,
                                      const StateSlices& slices, const std::vector<uint64_t>& offsets, int rank) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, "cannot open for writing: " + errno_message(errno));
  std::vector<uint64_t> sums;
  std::string failure;
  for (size_t d = 0; d < names.size() && failure.empty(); ++d) {
    const auto [first, count] = my_slice(*slices[d].first, rank);
    // (shards on a GPU: a host copy; the host is little-endian, as the datasets are: F32LE)
    const torch::Tensor data = slices[d].second->narrow(0, 0, count).to(torch::kCPU).contiguous();
    const int64_t size = static_cast<int64_t>(data.element_size());
    const auto* p = static_cast<const char*>(data.data_ptr());
    int64_t left = count * size;
    off_t at = static_cast<off_t>(offsets[d] + static_cast<uint64_t>(first * size));
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
    sums.push_back(count > 0 ? crc_of(data.data_ptr(), count * size) : 0u);
    sums.push_back(static_cast<uint64_t>(count * size));
  }
  if (failure.empty() && ::fsync(fd) != 0) failure = "cannot sync to disk: " + errno_message(errno);
  if (::close(fd) != 0 && failure.empty()) failure = "cannot write (close): " + errno_message(errno);
  if (!failure.empty()) throw Error(path, failure);
  return sums;
}

}  // namespace dtrainer::ckpt
