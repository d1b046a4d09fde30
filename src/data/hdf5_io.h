#pragma once
// Thin RAII layer over the HDF5 C API for the shard reader/writer. Private to src/data.
// Debian's parallel HDF5 is not built thread-safe: every HDF5 call in dtrainer holds
// hdf5_mutex() (see data/hdf5_lock.h).

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/data/shard_format.h"

namespace dtrainer::data::h5 {

// Owns one HDF5 identifier and closes it with the right H5*close.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  void reset();    // closes; a failed close forbids HDF5's exit cleanup (core/library_cleanup.h)
  herr_t close();  // the same, returning the closer's result (a file's close writes its structure)
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  herr_t (*closer_)(hid_t) = nullptr;
};

// Silences HDF5's own error printing once per process; errors become dtrainer::Error.
void quiet_errors();

Handle open_file_readonly(const std::string& path);
Handle create_file(const std::string& path);
Handle open_dataset(hid_t file, const std::string& path, const std::string& name);
bool has_dataset(hid_t file, const std::string& name);
bool has_attribute(hid_t obj, const std::string& name);

std::vector<int64_t> dataset_shape(hid_t dset, const std::string& where);
// The element type of a float dataset (fp32 / fp16 / bf16), checking the layout.
ElementType float_element_type(hid_t dset, const std::string& where);

// The HDF5 type for an element type (fp16: h5py's IEEE half layout; bf16: uint16 + "dtype" attr).
Handle file_type(ElementType t);

int64_t read_int_attr(hid_t obj, const std::string& name, const std::string& where);
std::string read_string_attr(hid_t obj, const std::string& name, const std::string& where);
void write_int_attr(hid_t obj, const std::string& name, int64_t value);
void write_string_attr(hid_t obj, const std::string& name, const std::string& value);

// Whole 1-D/2-D integer datasets, converted to int64.
std::vector<int64_t> read_int_dataset(hid_t file, const std::string& name, const std::string& where);
std::vector<std::string> read_string_dataset(hid_t file, const std::string& name, const std::string& where);

// Reads rows [row, row + count) of a dataset whose leading dimension is rows, into `out`
// (row_elems elements per row, raw element bytes of `type`).
void read_rows(hid_t dset, int64_t row, int64_t count, int64_t row_elems, ElementType type, void* out,
               const std::string& where);

}  // namespace dtrainer::data::h5
