#pragma once
// The safetensors file format (the Hugging Face ecosystem's weights file): an 8-byte little-endian
// header length N, N bytes of JSON — {"name": {"dtype": "F32", "shape": [..], "data_offsets":
// [begin, end]}, ..., "__metadata__": {string: string}} — then the tensors' raw bytes, back to back
// (offsets relative to the end of the header). Written tensor by tensor, so a multi-gigabyte
// model never has to be in memory at once; read by name.

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "dtrainer/core/temp_files.h"

namespace dtrainer::ckpt {

struct SafetensorsEntry {
  std::string name;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  int64_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const;
};

// "F32" <-> kFloat32 and the other types safetensors names (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL).
const char* safetensors_dtype_name(torch::ScalarType t);
torch::ScalarType parse_safetensors_dtype(const std::string& name, const std::string& where);

// Writes `path` atomically: the file appears (renamed from a temporary beside it) only at commit();
// destroyed uncommitted, the temporary is removed. Tensors are written in the order declared.
class SafetensorsWriter {
 public:
  // entries: name, dtype and shape of every tensor (offsets are assigned here).
  SafetensorsWriter(const std::string& path, std::vector<SafetensorsEntry> entries,
                    const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next declared tensor: its name, and data of the declared shape (converted to the
  // declared dtype).
  void write(const std::string& name, const torch::Tensor& data);
  void commit();
  int64_t bytes() const { return data_bytes_; }

 private:
  std::string path_, tmp_;
  std::vector<SafetensorsEntry> entries_;
  size_t next_ = 0;
  int64_t data_bytes_ = 0;
  std::FILE* f_ = nullptr;
  std::unique_ptr<TempFileGuard> guard_;  // the temporary: removed unless committed
  bool committed_ = false;
};

// A parsed, validated safetensors file (the header is checked whole: known dtypes, sizes that
// match shapes, offsets that tile the data section exactly, a file long enough to hold it).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // in file order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* find(const std::string& name) const;  // nullptr when absent
  // The tensor in its stored dtype and shape.
  torch::Tensor read(const std::string& name) const;

 private:
  std::string path_;
  int64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dtrainer::ckpt
