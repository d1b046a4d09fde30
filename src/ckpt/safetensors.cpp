#include "dtrainer/ckpt/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/temp_files.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors stores little-endian data; this host is not");

namespace fs = std::filesystem;

namespace dtrainer::ckpt {
namespace {

struct DtypeName {
  torch::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {{torch::kFloat64, "F64"},   {torch::kFloat32, "F32"}, {torch::kFloat16, "F16"},
                                 {torch::kBFloat16, "BF16"}, {torch::kInt64, "I64"},   {torch::kInt32, "I32"},
                                 {torch::kInt16, "I16"},     {torch::kInt8, "I8"},     {torch::kUInt8, "U8"},
                                 {torch::kBool, "BOOL"}};

constexpr int64_t kMaxHeaderBytes = 100 << 20;  // what the reference reader accepts

// pread/pwrite until done (short transfers are legal).
void read_exact(int fd, void* buf, int64_t n, int64_t offset, const std::string& where) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, static_cast<size_t>(n), offset);
    if (got <= 0)
      throw Error(where,
                  "cannot read " + std::to_string(n) + " bytes at offset " + std::to_string(offset) + " (truncated?)");
    p += got;
    n -= got;
    offset += got;
  }
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, d, &n)) throw Error(name, "shape's element count overflows 64 bits");
  return n;
}

const char* safetensors_dtype_name(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  throw Error("safetensors", std::string("no safetensors name for dtype ") + c10::toString(t));
}

torch::ScalarType parse_safetensors_dtype(const std::string& name, const std::string& where) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  throw Error(where, "unsupported dtype '" + name + "' (F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<SafetensorsEntry> entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), tmp_(path + ".tmp-" + std::to_string(::getpid())), entries_(std::move(entries)) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (auto& e : entries_) {
    if (e.name == "__metadata__" || header.contains(e.name))
      throw Error(path, "duplicate or reserved tensor name '" + e.name + "'");
    e.begin = data_bytes_;
    e.end = e.begin + e.numel() * static_cast<int64_t>(c10::elementSize(e.dtype));
    data_bytes_ = e.end;
    header[e.name] = {
        {"dtype", safetensors_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {e.begin, e.end}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');     // the data section starts 8-byte aligned
  guard_ = std::make_unique<TempFileGuard>(tmp_);  // (removed on failure, and when a tool is interrupted)
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) throw Error(tmp_, std::string("cannot create: ") + std::strerror(errno));
  const uint64_t n = text.size();
  if (std::fwrite(&n, 8, 1, f_) != 1 || std::fwrite(text.data(), 1, text.size(), f_) != text.size())
    throw Error(tmp_, "cannot write the header: " + errno_message(errno));
}

SafetensorsWriter::~SafetensorsWriter() {
  if (f_) std::fclose(f_);
}

void SafetensorsWriter::write(const std::string& name, const torch::Tensor& data) {
  if (next_ >= entries_.size())
    throw Error(path_, "tensor '" + name + "' written but all declared tensors are written");
  const SafetensorsEntry& e = entries_[next_];
  if (name != e.name) throw Error(path_, "tensor '" + name + "' written where '" + e.name + "' was declared");
  if (data.sizes().vec() != e.shape) throw Error(path_, "tensor '" + name + "' has a shape other than declared");
  const torch::Tensor t = data.to(torch::kCPU, e.dtype).contiguous();
  const size_t bytes = static_cast<size_t>(e.end - e.begin);
  if (bytes && std::fwrite(t.data_ptr(), 1, bytes, f_) != bytes)
    throw Error(tmp_, "cannot write tensor '" + name + "': " + errno_message(errno));
  ++next_;
}

void SafetensorsWriter::commit() {
  if (next_ != entries_.size())
    throw Error(path_, std::to_string(entries_.size() - next_) + " declared tensors were not written");
  const bool ok = std::fflush(f_) == 0 && ::fsync(fileno(f_)) == 0;
  const bool closed = std::fclose(f_) == 0;
  f_ = nullptr;
  if (!ok || !closed) throw Error(tmp_, "cannot finish writing: " + errno_message(errno));
  publish_file(tmp_, path_);
  guard_->release();
  committed_ = true;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY);
  if (f.fd < 0) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  const off_t size = ::lseek(f.fd, 0, SEEK_END);
  if (size < 8) throw Error(path, "not a safetensors file (shorter than its 8-byte header length)");
  uint64_t n = 0;
  read_exact(f.fd, &n, 8, 0, path);
  if (n > static_cast<uint64_t>(kMaxHeaderBytes) || static_cast<int64_t>(n) > size - 8)
    throw Error(path, "not a safetensors file (header length " + std::to_string(n) + " does not fit a " +
                          std::to_string(size) + "-byte file)");
  std::string text(n, '\0');
  read_exact(f.fd, text.data(), static_cast<int64_t>(n), 8, path);
  data_start_ = 8 + static_cast<int64_t>(n);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw Error(path, "header is not a JSON object");
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw Error(path, "__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) throw Error(path, "__metadata__." + k + " is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + key + "'";
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets") ||
        !value["dtype"].is_string() || !value["shape"].is_array() || !value["data_offsets"].is_array() ||
        value["data_offsets"].size() != 2)
      throw Error(where, "wants {dtype, shape, data_offsets: [begin, end]}");
    SafetensorsEntry e;
    e.name = key;
    e.dtype = parse_safetensors_dtype(value["dtype"].get<std::string>(), where);
    int64_t elements = 1;
    for (const auto& d : value["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw Error(where, "shape " + value["shape"].dump() + " is not a list of sizes");
      e.shape.push_back(d.get<int64_t>());
      int64_t bytes = 0;
      if (__builtin_mul_overflow(elements, e.shape.back(), &elements) ||
          __builtin_mul_overflow(elements, static_cast<int64_t>(c10::elementSize(e.dtype)), &bytes))
        throw Error(where, "shape " + value["shape"].dump() +
                               " holds more elements than any file can (the count overflows 64 bits)");
    }
    for (const auto& o : value["data_offsets"])
      if (!o.is_number_unsigned() || o.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw Error(where, "data_offsets " + value["data_offsets"].dump() + " are not byte offsets");
    e.begin = value["data_offsets"][0].get<int64_t>();
    e.end = value["data_offsets"][1].get<int64_t>();
    if (e.end < e.begin || e.end - e.begin != e.numel() * static_cast<int64_t>(c10::elementSize(e.dtype)))
      throw Error(where, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] do not hold " +
                             std::to_string(e.numel()) + " " + value["dtype"].get<std::string>() + " values");
    entries_.push_back(std::move(e));
  }
  // The tensors must tile the data section: no gaps, no overlaps, nothing past the end.
  std::sort(entries_.begin(), entries_.end(),
            [](const auto& a, const auto& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
  int64_t at = 0;
  for (const auto& e : entries_) {
    if (e.begin != at)
      throw Error(path, "tensor '" + e.name + "' starts at byte " + std::to_string(e.begin) +
                            " of the data, expected " + std::to_string(at) + " (overlapping or missing data)");
    at = e.end;
  }
  if (at != size - data_start_)
    throw Error(path, "the tensors cover " + std::to_string(at) + " data bytes, the file holds " +
                          std::to_string(size - data_start_) + " (truncated or padded file?)");
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

torch::Tensor SafetensorsFile::read(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (!e) throw Error(path_, "has no tensor '" + name + "'");
  torch::Tensor t = torch::empty(e->shape, torch::TensorOptions().dtype(e->dtype));
  Fd f;
  f.fd = ::open(path_.c_str(), O_RDONLY);
  if (f.fd < 0) throw Error(path_, std::string("cannot open: ") + std::strerror(errno));
  read_exact(f.fd, t.data_ptr(), e->end - e->begin, data_start_ + e->begin, path_);
  return t;
}

}  // namespace dtrainer::ckpt
