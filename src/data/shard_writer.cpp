#include "dtrainer/data/shard_writer.h"

#include <cstdio>
#include <filesystem>
#include <mutex>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/temp_files.h"
#include "dtrainer/data/hdf5_lock.h"
#include "hdf5_io.h"

namespace dtrainer::data {

ShardBuilder::ShardBuilder(ShardHeader header, std::vector<std::string> source_names)
    : header_(std::move(header)), source_names_(std::move(source_names)) {
  meta_.caption_offsets = {0};
  meta_.token_offsets = {0};
}

void ShardBuilder::add_image(const torch::Tensor& latent, const std::vector<CaptionRecord>& captions, int64_t orig_h,
                             int64_t orig_w, int64_t crop_top, int64_t crop_left, int64_t source) {
  const std::string where = "image " + std::to_string(latents_.size());
  if (latent.dim() != 3) throw Error(where, "latent must be [C, H, W]");
  if (!latents_.empty() && latent.sizes() != latents_[0].sizes())
    throw Error(where, "latent shape differs from image 0's");
  if (captions.empty()) throw Error(where, "needs at least the original caption");
  if (source < 0 || source >= static_cast<int64_t>(source_names_.size()))
    throw Error(where, "source id " + std::to_string(source) + " has no name");
  for (const auto& c : captions) {
    if (c.tokens.dim() != 2 || c.tokens.size(1) != header_.text_dim || c.tokens.size(0) < 1 ||
        c.tokens.size(0) > header_.max_tokens)
      throw Error(where, "caption tokens must be [1.." + std::to_string(header_.max_tokens) + ", " +
                             std::to_string(header_.text_dim) + "]");
    tokens_.push_back(c.tokens.to(torch::kFloat32).contiguous());
    meta_.token_offsets.push_back(meta_.token_offsets.back() + c.tokens.size(0));
    meta_.caption_nouns.push_back(c.nouns);
    meta_.captions.push_back(c.text);
    if (c.text.empty()) keep_text_ = false;
  }
  latents_.push_back(latent.to(torch::kFloat32).contiguous());
  meta_.caption_offsets.push_back(meta_.caption_offsets.back() + static_cast<int64_t>(captions.size()));
  meta_.original_size.insert(meta_.original_size.end(), {orig_h, orig_w});
  meta_.crop.insert(meta_.crop.end(), {crop_top, crop_left});
  meta_.source.push_back(source);
}

ShardContents ShardBuilder::build() const {
  ShardContents c = meta_;
  c.header = header_;
  c.source_names = source_names_;
  if (!keep_text_) c.captions.clear();
  c.latents = latents_.empty() ? torch::zeros({0}) : torch::stack(latents_);
  c.tokens = tokens_.empty() ? torch::zeros({0, header_.text_dim}) : torch::cat(tokens_);
  return c;
}

namespace {

void check_contents(const std::string& path, const ShardContents& c) {
  const int64_t N = c.latents.dim() == 4 ? c.latents.size(0) : 0;
  if (N == 0) throw Error(path, "a shard needs at least one image (latents [N >= 1, C, H, W])");
  const int64_t M = static_cast<int64_t>(c.caption_nouns.size());
  auto fail = [&](const std::string& what) { throw Error(path, what); };
  if (static_cast<int64_t>(c.caption_offsets.size()) != N + 1) fail("caption_offsets must have N + 1 entries");
  if (c.caption_offsets.front() != 0 || c.caption_offsets.back() != M) fail("caption_offsets must run from 0 to M");
  if (static_cast<int64_t>(c.token_offsets.size()) != M + 1) fail("token_offsets must have M + 1 entries");
  if (c.tokens.dim() != 2 || c.tokens.size(1) != c.header.text_dim) fail("tokens must be [total, text_dim]");
  if (c.token_offsets.back() != c.tokens.size(0)) fail("token_offsets must end at the token count");
  if (!c.captions.empty() && static_cast<int64_t>(c.captions.size()) != M) fail("captions must have M entries");
  if (static_cast<int64_t>(c.original_size.size()) != 2 * N || static_cast<int64_t>(c.crop.size()) != 2 * N ||
      static_cast<int64_t>(c.source.size()) != N)
    fail("per-image metadata must have N entries");
}

template <typename T>
h5::Handle dataset(hid_t file, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                   const ShardWriteOptions& o) {
  h5::Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  h5::Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (o.chunk_rows > 0 && dims[0] > 0) {
    std::vector<hsize_t> chunk = dims;
    chunk[0] = std::min<hsize_t>(dims[0], static_cast<hsize_t>(o.chunk_rows));
    H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
    if (o.gzip_level > 0) H5Pset_deflate(dcpl.get(), o.gzip_level);
  }
  const hid_t d = H5Dcreate2(file, name.c_str(), type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT);
  return h5::Handle(d, H5Dclose);
}

void write_ints(hid_t file, const std::string& path, const std::string& name, const std::vector<int64_t>& v,
                std::vector<hsize_t> dims, hid_t file_type, const ShardWriteOptions& o) {
  h5::Handle d = dataset<int64_t>(file, name, file_type, dims, ShardWriteOptions{});
  if (!d.valid()) throw Error(path, "cannot create dataset '" + name + "'");
  if (!v.empty() && H5Dwrite(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    throw Error(path, "cannot write dataset '" + name +
                          "': " + diagnose_write_failure(std::filesystem::path(path).parent_path()));
}

void write_floats(hid_t file, const std::string& path, const std::string& name, const torch::Tensor& t,
                  ElementType type, const ShardWriteOptions& o) {
  const torch::Tensor data = t.to(torch_dtype(type)).contiguous();
  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  h5::Handle ftype = h5::file_type(type);
  h5::Handle d = dataset<float>(file, name, ftype.get(), dims, o);
  if (!d.valid()) throw Error(path, "cannot create dataset '" + name + "'");
  if (type == ElementType::kBFloat16) h5::write_string_attr(d.get(), "dtype", "bfloat16");
  if (data.numel() > 0 && H5Dwrite(d.get(), ftype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data_ptr()) < 0)
    throw Error(path, "cannot write dataset '" + name +
                          "': " + diagnose_write_failure(std::filesystem::path(path).parent_path()));
}

void write_strings(hid_t file, const std::string& path, const std::string& name, const std::vector<std::string>& v) {
  h5::Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const hsize_t n = v.size();
  h5::Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  h5::Handle d(H5Dcreate2(file, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
               H5Dclose);
  std::vector<const char*> ptrs;
  for (const auto& s : v) ptrs.push_back(s.c_str());
  if (!d.valid() || (n > 0 && H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) < 0))
    throw Error(path, "cannot write dataset '" + name +
                          "': " + diagnose_write_failure(std::filesystem::path(path).parent_path()));
}

}  // namespace

void write_shard(const std::string& path, const ShardContents& c, const ShardWriteOptions& o) {
  check_contents(path, c);
  if (o.gzip_level > 0 && o.chunk_rows <= 0) throw Error(path, "gzip compression needs chunk_rows > 0");
  const std::string tmp = temporary_path(path).string();
  const TempFileGuard guard(tmp);  // (removed on failure, and when a tool is interrupted)
  {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    {
      h5::Handle f = h5::create_file(tmp);
      const hid_t root = f.get();
      h5::write_int_attr(root, "schema_version", c.header.schema_version);
      h5::write_string_attr(root, "latent_space", c.header.latent_space);
      h5::write_string_attr(root, "latent_encoder", c.header.latent_encoder);
      h5::write_string_attr(root, "text_encoder", c.header.text_encoder);
      h5::write_int_attr(root, "text_dim", c.header.text_dim);
      h5::write_int_attr(root, "max_tokens", c.header.max_tokens);
      const hsize_t N = c.latents.size(0), M = c.caption_nouns.size();
      write_floats(root, path, "latents", c.latents, o.latent_dtype, o);
      write_floats(root, path, "tokens", c.tokens, o.token_dtype, o);
      write_ints(root, path, "caption_offsets", c.caption_offsets, {N + 1}, H5T_STD_I64LE, o);
      write_ints(root, path, "token_offsets", c.token_offsets, {M + 1}, H5T_STD_I64LE, o);
      write_ints(root, path, "caption_nouns", c.caption_nouns, {M}, H5T_STD_I32LE, o);
      write_ints(root, path, "original_size", c.original_size, {N, 2}, H5T_STD_I32LE, o);
      write_ints(root, path, "crop", c.crop, {N, 2}, H5T_STD_I32LE, o);
      write_ints(root, path, "source", c.source, {N}, H5T_STD_I32LE, o);
      if (!c.captions.empty()) write_strings(root, path, "captions", c.captions);
      write_strings(root, path, "source_names", c.source_names);
      if (H5Fflush(root, H5F_SCOPE_GLOBAL) < 0 || f.close() < 0)
        throw Error(path,
                    "cannot write the shard: " + diagnose_write_failure(std::filesystem::path(tmp).parent_path()));
    }
  }
  fsync_path(tmp);
  publish_file(tmp, path);
  guard.release();
}

}  // namespace dtrainer::data
