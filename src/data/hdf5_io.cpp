#include "hdf5_io.h"

#include <mutex>

#include "dtrainer/core/error.h"
#include "dtrainer/core/library_cleanup.h"
#include "dtrainer/core/parse.h"
#include "dtrainer/data/hdf5_lock.h"

namespace dtrainer::data {

std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

const NameTable<ElementType>& name_table(ElementType) {
  // (each name first, then its short alias: name() gives the first)
  static const NameTable<ElementType> t{{"float32", ElementType::kFloat32},   {"fp32", ElementType::kFloat32},
                                        {"float16", ElementType::kFloat16},   {"fp16", ElementType::kFloat16},
                                        {"bfloat16", ElementType::kBFloat16}, {"bf16", ElementType::kBFloat16}};
  return t;
}
const char* to_string(ElementType t) { return name_table(t).name(t); }
ElementType parse_element_type(const std::string& field, const std::string& text) {
  return name_table(ElementType{}).parse(field, text);
}

int64_t element_bytes(ElementType t) { return t == ElementType::kFloat32 ? 4 : 2; }

torch::ScalarType torch_dtype(ElementType t) {
  switch (t) {
    case ElementType::kFloat32: return torch::kFloat32;
    case ElementType::kFloat16: return torch::kFloat16;
    case ElementType::kBFloat16: return torch::kBFloat16;
  }
  return torch::kFloat32;
}

namespace h5 {

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    closer_ = o.closer_;
    o.id_ = -1;
  }
  return *this;
}

void Handle::reset() { close(); }

herr_t Handle::close() {
  herr_t rc = 0;
  if (id_ >= 0 && closer_) rc = closer_(id_);
  if (rc < 0) forbid_library_cleanup("an HDF5 close failed");
  id_ = -1;
  return rc;
}

void quiet_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

Handle open_file_readonly(const std::string& path) {
  quiet_errors();
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw Error(path, "cannot open as HDF5 (missing, truncated or corrupt file?)");
  return Handle(id, H5Fclose);
}

Handle create_file(const std::string& path) {
  quiet_errors();
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) throw Error(path, "cannot create HDF5 file (directory missing or not writable?)");
  return Handle(id, H5Fclose);
}

bool has_dataset(hid_t file, const std::string& name) { return H5Lexists(file, name.c_str(), H5P_DEFAULT) > 0; }

bool has_attribute(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

Handle open_dataset(hid_t file, const std::string& path, const std::string& name) {
  if (!has_dataset(file, name)) throw Error(path, "missing dataset '" + name + "'");
  const hid_t id = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
  if (id < 0) throw Error(path, "cannot open dataset '" + name + "' (corrupt file?)");
  return Handle(id, H5Dclose);
}

std::vector<int64_t> dataset_shape(hid_t dset, const std::string& where) {
  Handle space(H5Dget_space(dset), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) throw Error(where, "cannot read the dataset's shape");
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

Handle file_type(ElementType t) {
  switch (t) {
    case ElementType::kFloat32: return Handle(H5Tcopy(H5T_IEEE_F32LE), H5Tclose);
    case ElementType::kFloat16: {
      // IEEE 754 half, the layout h5py writes for numpy float16 (sign bit 15, 5 exponent bits
      // from bit 10, 10 mantissa bits, exponent bias 15).
      const hid_t t16 = H5Tcopy(H5T_IEEE_F32LE);
      H5Tset_fields(t16, 15, 10, 5, 0, 10);
      H5Tset_size(t16, 2);
      H5Tset_ebias(t16, 15);
      return Handle(t16, H5Tclose);
    }
    case ElementType::kBFloat16: return Handle(H5Tcopy(H5T_STD_U16LE), H5Tclose);
  }
  return Handle();
}

ElementType float_element_type(hid_t dset, const std::string& where) {
  Handle type(H5Dget_type(dset), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  const size_t size = H5Tget_size(type.get());
  if (cls == H5T_FLOAT && size == 4) return ElementType::kFloat32;
  if (cls == H5T_FLOAT && size == 2) {
    size_t spos, epos, esize, mpos, msize;
    H5Tget_fields(type.get(), &spos, &epos, &esize, &mpos, &msize);
    if (spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(type.get()) == 15 &&
        H5Tget_order(type.get()) == H5T_ORDER_LE)
      return ElementType::kFloat16;
    throw Error(where, "16-bit float with a non-IEEE-half layout");
  }
  if (cls == H5T_INTEGER && size == 2 && has_attribute(dset, "dtype")) {
    const std::string d = read_string_attr(dset, "dtype", where);
    if (d == "bfloat16") return ElementType::kBFloat16;
    throw Error(where, "uint16 data with dtype attribute '" + d + "' (only 'bfloat16' is understood)");
  }
  throw Error(where, "unsupported element type (expected float32, float16, or uint16 with dtype=bfloat16)");
}

int64_t read_int_attr(hid_t obj, const std::string& name, const std::string& where) {
  if (!has_attribute(obj, name)) throw Error(where, "missing attribute '" + name + "'");
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
  long long v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_LLONG, &v) < 0) throw Error(where, "attribute '" + name + "' is not an integer");
  return v;
}

std::string read_string_attr(hid_t obj, const std::string& name, const std::string& where) {
  if (!has_attribute(obj, name)) throw Error(where, "missing attribute '" + name + "'");
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) throw Error(where, "attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(type.get()) > 0) {
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* s = nullptr;
    if (H5Aread(a.get(), mem.get(), &s) < 0) throw Error(where, "cannot read attribute '" + name + "'");
    std::string out = s ? s : "";
    Handle space(H5Aget_space(a.get()), H5Sclose);
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, &s);
    return out;
  }
  const size_t n = H5Tget_size(type.get());
  std::string out(n, '\0');
  if (H5Aread(a.get(), type.get(), out.data()) < 0) throw Error(where, "cannot read attribute '" + name + "'");
  out.resize(out.find_last_not_of('\0') == std::string::npos ? 0 : out.find_last_not_of('\0') + 1);
  return out;
}

void write_int_attr(hid_t obj, const std::string& name, int64_t value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const long long v = value;
  H5Awrite(a.get(), H5T_NATIVE_LLONG, &v);
}

void write_string_attr(hid_t obj, const std::string& name, const std::string& value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  Handle a(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const char* s = value.c_str();
  H5Awrite(a.get(), type.get(), &s);
}

std::vector<int64_t> read_int_dataset(hid_t file, const std::string& name, const std::string& where) {
  Handle d = open_dataset(file, where, name);
  Handle type(H5Dget_type(d.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER) throw Error(where, "dataset '" + name + "' is not integer");
  int64_t n = 1;
  for (int64_t s : dataset_shape(d.get(), where)) n *= s;
  std::vector<int64_t> out(n);
  if (n > 0 && H5Dread(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    throw Error(where, "cannot read dataset '" + name + "' (corrupt or truncated file?)");
  return out;
}

std::vector<std::string> read_string_dataset(hid_t file, const std::string& name, const std::string& where) {
  Handle d = open_dataset(file, where, name);
  Handle type(H5Dget_type(d.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) <= 0)
    throw Error(where, "dataset '" + name + "' is not variable-length strings");
  const auto shape = dataset_shape(d.get(), where);
  const int64_t n = shape.empty() ? 1 : shape[0];
  std::vector<char*> raw(n, nullptr);
  Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(mem.get(), H5T_VARIABLE);
  H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
  if (n > 0 && H5Dread(d.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()) < 0)
    throw Error(where, "cannot read dataset '" + name + "'");
  std::vector<std::string> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = raw[i] ? raw[i] : "";
  Handle space(H5Dget_space(d.get()), H5Sclose);
  if (n > 0) H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, raw.data());
  return out;
}

void read_rows(hid_t dset, int64_t row, int64_t count, int64_t row_elems, ElementType type, void* out,
               const std::string& where) {
  Handle space(H5Dget_space(dset), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  std::vector<hsize_t> dims(rank), start(rank, 0), cnt(rank);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  if (row < 0 || count < 0 || static_cast<hsize_t>(row + count) > dims[0])
    throw Error(where, "rows [" + std::to_string(row) + ", " + std::to_string(row + count) +
                           ") outside the dataset's " + std::to_string(dims[0]) + " rows");
  if (count == 0) return;
  start[0] = row;
  cnt = dims;
  cnt[0] = count;
  H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr);
  const hsize_t n = static_cast<hsize_t>(count * row_elems);
  Handle mem_space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Handle mem_type = file_type(type);  // same layout in memory: raw bytes, no conversion
  if (H5Dread(dset, mem_type.get(), mem_space.get(), space.get(), H5P_DEFAULT, out) < 0)
    throw Error(where, "cannot read rows [" + std::to_string(row) + ", " + std::to_string(row + count) +
                           ") (truncated or corrupt file?)");
}

}  // namespace h5
}  // namespace dtrainer::data
