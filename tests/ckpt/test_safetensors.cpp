// The safetensors reader and writer against an independent implementation (numpy, in
// safetensors_reference.py), in both directions, plus what a corrupt file must produce.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "data/data_test_util.h"
#include "run_process.h"

#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/core/error.h"

using namespace dtrainer;
using namespace dtrainer::ckpt;
namespace fs = std::filesystem;

namespace {

std::string reference(const std::string& args) {
  const auto r = test::run_process(std::string(DT_NUMPY_PYTHON) + " " + SAFETENSORS_REFERENCE + " " + args);
  INFO(r.out);
  REQUIRE(r.status == 0);
  return r.out;
}

// A file whose 8-byte length prefix and header are `header` (unpadded), followed by `data_bytes` zero bytes.
std::string raw_file(const std::string& dir, const std::string& header, size_t data_bytes, int64_t declared_len = -1) {
  static int n = 0;
  const std::string path = dir + "/raw" + std::to_string(n++) + ".safetensors";
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = declared_len >= 0 ? static_cast<uint64_t>(declared_len) : header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header << std::string(data_bytes, '\0');
  return path;
}

std::string error_of(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a file written by numpy reads back with its dtypes, shapes, values and metadata") {
  const std::string dir = test::scratch_dir("st-numpy");
  reference("write " + dir + "/np.safetensors");
  const SafetensorsFile f(dir + "/np.safetensors");
  CHECK(f.metadata() == std::map<std::string, std::string>{{"origin", "numpy"}});
  REQUIRE(f.entries().size() == 4);
  CHECK(f.entries()[0].name == "c");  // file order, not name order

  const torch::Tensor b = f.read("b.weight");
  CHECK(b.scalar_type() == torch::kFloat32);
  CHECK(torch::equal(b, (torch::arange(12, torch::kFloat32) * 0.5 - 1.0).view({3, 4})));
  const torch::Tensor a = f.read("a.bias");
  CHECK(a.scalar_type() == torch::kFloat16);
  CHECK(torch::equal(a.to(torch::kFloat32), torch::arange(5, torch::kFloat32) / 4));
  const torch::Tensor c = f.read("c");
  CHECK(c.scalar_type() == torch::kBFloat16);
  CHECK(torch::equal(c.to(torch::kFloat32), torch::tensor({1.0f, -2.0f, 0.5f, 3.25f}).view({2, 2})));
  const torch::Tensor idx = f.read("idx");
  CHECK(torch::equal(idx, torch::tensor({int64_t{7}, int64_t{-1}, int64_t{1} << 40})));
  CHECK(f.find("missing") == nullptr);
  CHECK_THROWS_WITH(f.read("missing"), Catch::Contains("has no tensor 'missing'"));
}

TEST_CASE("a file written here is read by numpy with the declared order, dtypes, rounding and metadata") {
  const std::string dir = test::scratch_dir("st-ours");
  const std::string path = dir + "/ours.safetensors";
  const torch::Tensor w = torch::arange(6, torch::kFloat32).view({2, 3}) / 3.0;
  const torch::Tensor h = torch::tensor({0.1f, -0.7f, 1.0f / 3.0f, 65504.0f});
  const torch::Tensor bf = torch::tensor({1.0f / 3.0f, -7.1f, 1e-3f});
  const torch::Tensor scalar = torch::tensor(2.5f);
  const torch::Tensor n = torch::tensor({int64_t{-3}, int64_t{1} << 33});
  {
    SafetensorsWriter out(path,
                          {{"w", torch::kFloat32, {2, 3}},
                           {"h", torch::kFloat16, {4}},
                           {"bf", torch::kBFloat16, {3}},
                           {"scalar", torch::kFloat32, {}},
                           {"n", torch::kInt64, {2}}},
                          {{"producer", "test"}, {"note", "x y"}});
    out.write("w", w);
    out.write("h", h);  // converted (rounded) to the declared F16 / BF16 by the writer
    out.write("bf", bf);
    out.write("scalar", scalar);
    out.write("n", n);
    CHECK_FALSE(fs::exists(path));  // nothing at the destination before commit
    out.commit();
  }
  reference("check " + path);
  // And it reads back here, in the declared order.
  const SafetensorsFile f(path);
  REQUIRE(f.entries().size() == 5);
  CHECK(f.entries()[1].name == "h");
  CHECK(torch::equal(f.read("w"), w));
  CHECK(torch::equal(f.read("h"), h.to(torch::kFloat16)));
  CHECK(f.read("scalar").dim() == 0);
}

TEST_CASE("a writer that fails or is abandoned leaves no file behind") {
  const std::string dir = test::scratch_dir("st-abandon");
  const std::string path = dir + "/w.safetensors";
  {
    SafetensorsWriter out(path, {{"a", torch::kFloat32, {2}}, {"b", torch::kFloat32, {2}}}, {});
    CHECK_THROWS_WITH(out.write("b", torch::zeros({2})), Catch::Contains("where 'a' was declared"));
    CHECK_THROWS_WITH(out.write("a", torch::zeros({3})), Catch::Contains("shape other than declared"));
    out.write("a", torch::zeros({2}));
    CHECK_THROWS_WITH(out.commit(), Catch::Contains("1 declared tensors were not written"));
  }
  CHECK(fs::is_empty(dir));  // neither the file nor its temporary
  CHECK_THROWS_WITH(SafetensorsWriter(path, {{"a", torch::kFloat32, {1}}, {"a", torch::kFloat32, {1}}}, {}),
                    Catch::Contains("duplicate"));
}

TEST_CASE("corrupt files are refused with the file and the problem named") {
  const std::string dir = test::scratch_dir("st-corrupt");
  const std::string ok = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK(error_of(raw_file(dir, ok, 8)).empty());
  // Truncated data, trailing bytes, a header longer than the file, garbage, a short file.
  CHECK_THAT(error_of(raw_file(dir, ok, 4)), Catch::Contains("truncated"));
  CHECK_THAT(error_of(raw_file(dir, ok, 12)), Catch::Contains("the file holds 12"));
  CHECK_THAT(error_of(raw_file(dir, ok, 8, 1 << 20)), Catch::Contains("does not fit"));
  CHECK_THAT(error_of(raw_file(dir, "{not json", 0)), Catch::Contains("not valid JSON"));
  {
    const std::string tiny = dir + "/tiny.safetensors";
    std::ofstream(tiny) << "abc";
    CHECK_THAT(error_of(tiny), Catch::Contains("not a safetensors file"));
  }
  // Sizes that do not match the shape, gaps, overlaps, unknown dtypes, negative sizes.
  CHECK_THAT(error_of(raw_file(dir, R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
             Catch::Contains("tensor 't'") && Catch::Contains("do not hold 3 F32"));
  CHECK_THAT(
      error_of(raw_file(
          dir,
          R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
          12)),
      Catch::Contains("tensor 'b' starts at byte 8"));
  CHECK_THAT(
      error_of(raw_file(
          dir,
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
          8)),
      Catch::Contains("overlapping"));
  CHECK_THAT(error_of(raw_file(dir, R"({"t":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1)),
             Catch::Contains("unsupported dtype 'F8_E4M3'"));
  CHECK_THAT(error_of(raw_file(dir, R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)),
             Catch::Contains("not a list of sizes"));
  CHECK_THAT(error_of(raw_file(dir, R"({"t":{"dtype":"F32","shape":[1]}})", 4)), Catch::Contains("data_offsets"));
  // A shape whose element count (or byte count) overflows 64 bits never wraps into a "valid" size.
  CHECK_THAT(
      error_of(raw_file(dir, R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0)),
      Catch::Contains("overflows 64 bits"));
  CHECK_THAT(error_of(raw_file(dir, R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0)),
             Catch::Contains("overflows 64 bits"));
  CHECK_THAT(error_of(raw_file(dir, R"({"t":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}})", 4)),
             Catch::Contains("not a list of sizes"));
  CHECK_THAT(error_of(dir + "/absent.safetensors"), Catch::Contains("absent.safetensors: cannot open"));
}
