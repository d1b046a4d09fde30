#include "dtrainer/data/shard_reader.h"

#include <sys/stat.h>

#include <cerrno>
#include <mutex>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/data/hdf5_lock.h"
#include "hdf5_io.h"

namespace dtrainer::data {

struct ShardReader::Handles {
  h5::Handle file, latents, tokens;
};

namespace {

bool stat_identity(const std::string& path, uint64_t& dev, uint64_t& ino, int64_t& size, int64_t& mtime_ns) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  dev = st.st_dev;
  ino = st.st_ino;
  size = st.st_size;
  mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return true;
}

}  // namespace

void ShardReader::check_unchanged() const {
  Identity now;
  if (!stat_identity(path_, now.dev, now.ino, now.size, now.mtime_ns))
    throw ShardChangedError(path_,
                            "disappeared while the run reads it (" + errno_message(errno) + "); restore it and resume");
  if (now.dev != identity_.dev || now.ino != identity_.ino)
    throw ShardChangedError(path_,
                            "was replaced by another file while the run reads it; the data of a run must not change: "
                            "restore it, or start a new run on the new data");
  if (now.size != identity_.size || now.mtime_ns != identity_.mtime_ns)
    throw ShardChangedError(
        path_, "changed while the run reads it (" + std::to_string(identity_.size) + " bytes when opened, " +
                   std::to_string(now.size) + " now" + (now.size == identity_.size ? ", rewritten" : "") +
                   "): reads of a truncated or rewritten HDF5 file return zeros. Restore the shard (never "
                   "copy over the shards of a running job) and resume from the last checkpoint");
}

ShardReader::~ShardReader() {
  if (h_) {
    std::lock_guard<std::mutex> lock(hdf5_mutex());
    h_.reset();
  }
}
ShardReader::ShardReader(ShardReader&&) noexcept = default;
ShardReader& ShardReader::operator=(ShardReader&&) noexcept = default;

ShardReader::ShardReader(const std::string& path) : path_(path), h_(std::make_unique<Handles>()) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  if (!stat_identity(path, identity_.dev, identity_.ino, identity_.size, identity_.mtime_ns))
    throw Error(path, "cannot open: " + errno_message(errno));
  h_->file = h5::open_file_readonly(path);
  const hid_t f = h_->file.get();
  {  // (HDF5 checks this at open too; a file cut short between the stat and the open is caught here)
    haddr_t eoa = 0;
    if (H5Fget_eoa(f, &eoa) >= 0 && static_cast<int64_t>(eoa) > identity_.size)
      throw Error(path, "truncated: HDF5 addresses " + std::to_string(eoa) + " bytes, the file has " +
                            std::to_string(identity_.size));
  }
  header_.schema_version = h5::read_int_attr(f, "schema_version", path);
  if (header_.schema_version != kShardSchemaVersion)
    throw Error(path, "shard schema version " + std::to_string(header_.schema_version) +
                          ", this dtrainer reads version " + std::to_string(kShardSchemaVersion));
  header_.latent_space = h5::read_string_attr(f, "latent_space", path);
  header_.latent_encoder =
      h5::has_attribute(f, "latent_encoder") ? h5::read_string_attr(f, "latent_encoder", path) : "";
  header_.text_encoder = h5::read_string_attr(f, "text_encoder", path);
  header_.text_dim = h5::read_int_attr(f, "text_dim", path);
  header_.max_tokens = h5::read_int_attr(f, "max_tokens", path);
  if (header_.text_dim < 1 || header_.max_tokens < 1) throw Error(path, "text_dim and max_tokens must be positive");

  h_->latents = h5::open_dataset(f, path, "latents");
  h_->tokens = h5::open_dataset(f, path, "tokens");
  const auto ls = h5::dataset_shape(h_->latents.get(), path + ":latents");
  if (ls.size() != 4) throw Error(path, "latents must be [N, C, H, W]");
  num_images_ = ls[0];
  if (num_images_ == 0) throw Error(path, "shard contains no images");
  latent_shape_ = {ls[1], ls[2], ls[3]};
  latent_dtype_ = h5::float_element_type(h_->latents.get(), path + ":latents");
  token_dtype_ = h5::float_element_type(h_->tokens.get(), path + ":tokens");
  const auto ts = h5::dataset_shape(h_->tokens.get(), path + ":tokens");
  if (ts.size() != 2 || ts[1] != header_.text_dim)
    throw Error(path, "tokens must be [total_tokens, text_dim = " + std::to_string(header_.text_dim) + "]");

  caption_offsets_ = h5::read_int_dataset(f, "caption_offsets", path);
  token_offsets_ = h5::read_int_dataset(f, "token_offsets", path);
  caption_nouns_ = h5::read_int_dataset(f, "caption_nouns", path);
  original_size_ = h5::read_int_dataset(f, "original_size", path);
  crop_ = h5::read_int_dataset(f, "crop", path);
  source_ = h5::read_int_dataset(f, "source", path);
  source_names_ = h5::has_dataset(f, "source_names") ? h5::read_string_dataset(f, "source_names", path)
                                                     : std::vector<std::string>{"default"};

  // Structure: offsets monotone and consistent with the datasets they index.
  const int64_t N = num_images_, M = static_cast<int64_t>(caption_nouns_.size());
  auto fail = [&](const std::string& what) { throw Error(path, what); };
  if (static_cast<int64_t>(caption_offsets_.size()) != N + 1)
    fail("caption_offsets has " + std::to_string(caption_offsets_.size()) +
         " entries, expected N + 1 = " + std::to_string(N + 1));
  if (caption_offsets_.front() != 0 || caption_offsets_.back() != M)
    fail("caption_offsets must run from 0 to the caption count " + std::to_string(M));
  for (int64_t i = 0; i < N; ++i)
    if (caption_offsets_[i + 1] <= caption_offsets_[i])
      fail("image " + std::to_string(i) + " has no caption (caption_offsets must increase)");
  if (static_cast<int64_t>(token_offsets_.size()) != M + 1)
    fail("token_offsets has " + std::to_string(token_offsets_.size()) +
         " entries, expected M + 1 = " + std::to_string(M + 1));
  if (token_offsets_.front() != 0 || token_offsets_.back() != ts[0])
    fail("token_offsets must run from 0 to the token rows " + std::to_string(ts[0]));
  for (int64_t j = 0; j < M; ++j) {
    const int64_t L = token_offsets_[j + 1] - token_offsets_[j];
    if (L < 1 || L > header_.max_tokens)
      fail("caption " + std::to_string(j) + " has " + std::to_string(L) + " tokens (allowed 1.." +
           std::to_string(header_.max_tokens) + ")");
  }
  if (static_cast<int64_t>(original_size_.size()) != 2 * N) fail("original_size must be [N, 2]");
  if (static_cast<int64_t>(crop_.size()) != 2 * N) fail("crop must be [N, 2]");
  if (static_cast<int64_t>(source_.size()) != N) fail("source must be [N]");
  for (int64_t i = 0; i < N; ++i)
    if (source_[i] < 0 || source_[i] >= static_cast<int64_t>(source_names_.size()))
      fail("image " + std::to_string(i) + " has source id " + std::to_string(source_[i]) +
           " without a name in source_names");
  if (h5::has_dataset(f, "captions")) {
    h5::Handle c = h5::open_dataset(f, path, "captions");
    const auto cs = h5::dataset_shape(c.get(), path);
    if (cs.size() != 1 || cs[0] != M) fail("captions must have one string per caption (" + std::to_string(M) + ")");
  }
}

bool ShardReader::has_caption_text() const {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  return h5::has_dataset(h_->file.get(), "captions");
}

std::vector<std::string> ShardReader::caption_texts() const {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  if (!h5::has_dataset(h_->file.get(), "captions")) return {};
  return h5::read_string_dataset(h_->file.get(), "captions", path_);
}

void ShardReader::read_latent_into(int64_t image, void* out) const {
  if (image < 0 || image >= num_images_) throw Error(path_, "image " + std::to_string(image) + " out of range");
  const int64_t elems = latent_shape_[0] * latent_shape_[1] * latent_shape_[2];
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  h5::read_rows(h_->latents.get(), image, 1, elems, latent_dtype_, out, path_ + ": image " + std::to_string(image));
  check_unchanged();
  bytes_read_ += elems * element_bytes(latent_dtype_);
}

void ShardReader::read_tokens_into(int64_t caption, void* out) const {
  if (caption < 0 || caption >= num_captions())
    throw Error(path_, "caption " + std::to_string(caption) + " out of range");
  const int64_t L = token_length(caption);
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  h5::read_rows(h_->tokens.get(), token_offsets_[caption], L, header_.text_dim, token_dtype_, out,
                path_ + ": caption " + std::to_string(caption));
  check_unchanged();
  bytes_read_ += L * header_.text_dim * element_bytes(token_dtype_);
}

torch::Tensor ShardReader::read_latent(int64_t image) const {
  torch::Tensor t = torch::empty(latent_shape_, torch_dtype(latent_dtype_));
  read_latent_into(image, t.data_ptr());
  return t;
}

torch::Tensor ShardReader::read_tokens(int64_t caption) const {
  torch::Tensor t = torch::empty({token_length(caption), header_.text_dim}, torch_dtype(token_dtype_));
  read_tokens_into(caption, t.data_ptr());
  return t;
}

torch::Tensor ShardReader::read_latent_rows(int64_t row, int64_t count) const {
  torch::Tensor t =
      torch::empty({count, latent_shape_[0], latent_shape_[1], latent_shape_[2]}, torch_dtype(latent_dtype_));
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  h5::read_rows(h_->latents.get(), row, count, latent_shape_[0] * latent_shape_[1] * latent_shape_[2], latent_dtype_,
                t.data_ptr(), path_ + ": images " + std::to_string(row) + ".." + std::to_string(row + count - 1));
  check_unchanged();
  return t;
}

torch::Tensor ShardReader::read_token_rows(int64_t row, int64_t count) const {
  torch::Tensor t = torch::empty({count, header_.text_dim}, torch_dtype(token_dtype_));
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  h5::read_rows(h_->tokens.get(), row, count, header_.text_dim, token_dtype_, t.data_ptr(),
                path_ + ": token rows " + std::to_string(row) + ".." + std::to_string(row + count - 1));
  check_unchanged();
  return t;
}

ShardContents ShardReader::read_all() const {
  ShardContents c;
  c.header = header_;
  c.latents = read_latent_rows(0, num_images_);
  c.tokens = read_token_rows(0, token_offsets_.back());
  c.caption_offsets = caption_offsets_;
  c.token_offsets = token_offsets_;
  c.caption_nouns = caption_nouns_;
  c.captions = caption_texts();
  c.original_size = original_size_;
  c.crop = crop_;
  c.source = source_;
  c.source_names = source_names_;
  return c;
}

}  // namespace dtrainer::data
