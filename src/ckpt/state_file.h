#pragma once
// The checkpoint's state file, state.h5 (private to src/ckpt): one contiguous fp32 dataset per unit
// and kind, laid out by rank 0 and written by every rank at the datasets' offsets (each its own
// shard's slice), with the CRC-32 of each slice; read back whole. And the listing of a run's
// complete checkpoints.

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "dtrainer/parallel/sharded_params.h"

namespace dtrainer::ckpt {

// The manifest (meta.json) of the complete directory `dir` (a checkpoint or a snapshot: `what`
// names it in errors): the directory must exist and hold its COMPLETE marker, and meta.json must be
// valid JSON. Throws Error naming the path.
nlohmann::json read_complete_manifest(const std::filesystem::path& dir, const std::string& what);

// Moves `dir` into <root>/superseded/ under a unique name there; returns the new path.
std::filesystem::path move_aside(const std::filesystem::path& root, const std::filesystem::path& dir);

// Every complete directory <prefix><N> (with its COMPLETE marker) under `root`, by N.
std::vector<std::pair<int64_t, std::filesystem::path>> complete_numbered_dirs(const std::filesystem::path& root,
                                                                              const std::string& prefix);
// Every complete checkpoint (step_N with its COMPLETE marker) under `root`, oldest first.
std::vector<std::pair<int64_t, std::filesystem::path>> complete_checkpoint_paths(const std::filesystem::path& root);

// CRC-32 (zlib's) of `bytes` bytes, continuing `crc`; as meta.json records it ("crc32:0123abcd").
uint32_t crc_of(const void* data, int64_t bytes, uint32_t crc = 0);
std::string crc_text(uint32_t crc);
// meta.json's "checksums": each dataset's CRC combined over the ranks' slices in rank order, from
// every rank's write_my_slices result gathered to one vector (world x 2 x names).
nlohmann::json combine_checksums(const std::vector<std::string>& names, const std::vector<uint64_t>& gathered,
                                 int world);

// The innermost messages of HDF5's error stack (the library's own cause: "No space left on
// device", an MPI-IO error), for messages that say why, not only what.
std::string h5_cause();

// Elements of a 1-D dataset; -1 for any other rank.
int64_t vector_length(hid_t dset);
// The dataset `name` of `file`, which must hold `numel` fp32 elements (an Error at `where` otherwise).
torch::Tensor read_vector(hid_t file, const std::string& name, int64_t numel, const std::string& where);

// This rank's part of one unit's dataset: [rank * shard, rank * shard + shard) clipped to numel
// (the padding is not stored), as (first element, count).
std::pair<int64_t, int64_t> my_slice(const parallel::UnitShard& s, int rank);

// The datasets to write: each name with its unit's shard and the tensor of this rank's slice.
using StateSlices = std::vector<std::pair<const parallel::UnitShard*, const torch::Tensor*>>;

// Rank 0: creates `path` with one contiguous dataset per name (of HDF5 type `type`: fp32, or the
// 16-bit floats below), its storage allocated at creation and never filled (the ranks write every
// byte of it), closes it, and reserves the file's bytes on disk where the file system can (so a
// full disk is found here, not in the ranks' writes). Returns each dataset's byte offset in the file.
std::vector<uint64_t> lay_out_state_file(const std::string& path, const std::vector<std::string>& names,
                                         const StateSlices& slices, hid_t type = H5T_IEEE_F32LE);

// The HDF5 file type of fp32 (H5T_IEEE_F32LE), IEEE half (which h5py reads as numpy's float16)
// and bfloat16, little-endian; the 16-bit ones are built once and live until exit.
hid_t h5_float_type(torch::ScalarType dtype);

// Every rank: its slice of every dataset at the dataset's offset, synced; returns (crc, bytes) of
// each slice. The slices' element size is the datasets' (4 bytes for fp32, 2 for the 16-bit
// types: the tensors' raw little-endian bytes are written). Throws (locally) naming the file, the
// dataset and the cause.
std::vector<uint64_t> write_my_slices(const std::string& path, const std::vector<std::string>& names,
                                      const StateSlices& slices, const std::vector<uint64_t>& offsets, int rank);

}  // namespace dtrainer::ckpt
