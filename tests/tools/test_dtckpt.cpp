// dtckpt as a user runs it, on checkpoints the dtrainer binary writes under mpirun:
//  - export's tensors are the checkpoint's units cut at the recorded layout (checked by an
//    independent numpy/h5py reader), for params and EMA, in fp32, bf16 and fp16;
//  - a run started from exported weights (dtrainer --init-weights) evaluates exactly as the run
//    that saved them;
//  - validate finds non-finite values and missing datasets by name, and refuses newer formats;
//  - bad paths, existing outputs, missing EMA and foreign weights are refused by name.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "run_process.h"
#include "train/dtrainer_runner.h"

using namespace dtrainer;
namespace fs = std::filesystem;

namespace {

test::ProcessResult dtckpt(const std::string& args) { return test::run_process(std::string(DTCKPT_PATH) + " " + args); }

void check_export(const std::string& file, const std::string& ckpt, const std::string& kind, const std::string& dtype) {
  const auto r = test::run_process(std::string(DT_NUMPY_PYTHON) + " " + SAFETENSORS_REFERENCE + " check-export " +
                                   file + " " + ckpt + " " + kind + " " + dtype);
  INFO(r.out);
  CHECK(r.status == 0);
}

// The held-out loss of the eval record at `step` in run_dir/metrics.jsonl.
double eval_loss(const std::string& run_dir, int64_t step) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("eval") && j.at("step").get<int64_t>() == step) return j.at("eval_loss").get<double>();
  }
  FAIL("no eval record at step " << step << " in " << run_dir);
  return 0;
}

// One 2-rank zero3 run with EMA, 4 steps, checkpointed at the end: what every case exports.
const std::string& trained_run() {
  static const std::string dir = [] {
    const std::string d = test::scratch_dir("dtckpt-run");
    REQUIRE(test::run(2, "--steps 4 --sharding zero3 --run-dir " + d, d + ".log") == 0);
    return d;
  }();
  return dir;
}

}  // namespace

TEST_CASE("export: the checkpoint's units cut at the recorded layout, as params or EMA, in fp32, bf16 or fp16") {
  const std::string run = trained_run(), ckpt = run + "/ckpt/step_00000004";
  const std::string out = test::scratch_dir("dtckpt-export");

  auto r = dtckpt("export " + run + " --out " + out + "/params.safetensors --weights params");
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("params weights") && Catch::Contains("step 4"));
  check_export(out + "/params.safetensors", ckpt, "params", "F32");

  r = dtckpt("export " + ckpt + " --out " + out + "/ema.safetensors --dtype bf16");  // auto: the EMA, kept by default
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("ema weights"));
  check_export(out + "/ema.safetensors", ckpt, "ema", "BF16");

  r = dtckpt("export " + ckpt + " --out " + out + "/half.safetensors --weights params --dtype fp16");
  REQUIRE(r.status == 0);
  check_export(out + "/half.safetensors", ckpt, "params", "F16");

  // inspect agrees with the checkpoint and the file.
  r = dtckpt("inspect " + run + " --json");
  REQUIRE(r.status == 0);
  const auto info = nlohmann::json::parse(r.out);
  CHECK(info["step"] == 4);
  CHECK(info["saved_by_world_size"] == 2);
  CHECK(info["has_ema"] == true);
  CHECK(info["has_layout"] == true);
  r = dtckpt("inspect " + out + "/params.safetensors --json");
  REQUIRE(r.status == 0);
  const auto file = nlohmann::json::parse(r.out);
  CHECK(file["elements"] == info["parameters"]);
  CHECK(file["metadata"]["step"] == "4");
  CHECK(file["metadata"]["weights"] == "params");
  CHECK_THAT(file["metadata"]["config_toml"].get<std::string>(), Catch::Contains("sharding = \"zero3\""));
}

TEST_CASE("a run started from exported weights evaluates exactly as the run that saved them") {
  const std::string run = trained_run();
  const std::string dir = test::scratch_dir("dtckpt-init");
  REQUIRE(dtckpt("export " + run + " --out " + dir + "/w.safetensors --weights params").status == 0);
  // lr 1e-30: two optimizer steps leave fp32 weights of size ~1e-2 bitwise unchanged, so the
  // held-out loss at the end must equal the saving run's at its last step (eval uses the weights,
  // not the EMA). A 1-rank replicate run: the weights do not depend on how they were sharded.
  const std::string b = dir + "/b";
  REQUIRE(test::run(1, "--steps 2 --lr 1e-30 --init-weights " + dir + "/w.safetensors --run-dir " + b, b + ".log") ==
          0);
  CHECK_THAT(test::slurp(b + ".log"), Catch::Contains("initial weights from"));
  CHECK(eval_loss(b, 2) == Approx(eval_loss(run, 4)).epsilon(1e-6));
  // Continuing that run resumes its own checkpoint: the weights file is no longer needed.
  fs::rename(dir + "/w.safetensors", dir + "/moved.safetensors");
  REQUIRE(test::run(1, "--steps 3 --lr 1e-30 --init-weights " + dir + "/w.safetensors --run-dir " + b, b + ".2.log") ==
          0);
  CHECK_THAT(test::slurp(b + ".2.log"), Catch::Contains("resumed from") && !Catch::Contains("initial weights from"));
  // Without them the same run starts elsewhere (the comparison above can fail).
  const std::string c = dir + "/c";
  REQUIRE(test::run(1, "--steps 2 --lr 1e-30 --run-dir " + c, c + ".log") == 0);
  CHECK(eval_loss(c, 2) != Approx(eval_loss(run, 4)).epsilon(1e-3));
}

TEST_CASE("dtckpt and --init-weights refuse bad input by name, exit non-zero and write nothing") {
  const std::string run = trained_run();
  const std::string dir = test::scratch_dir("dtckpt-bad");

  auto r = dtckpt("export " + dir + "/nowhere --out " + dir + "/x.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("nowhere: no such file or directory"));
  CHECK_FALSE(fs::exists(dir + "/x.safetensors"));

  std::ofstream(dir + "/taken.safetensors") << "keep me";
  r = dtckpt("export " + run + " --out " + dir + "/taken.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("exists; pass --force"));
  CHECK(test::slurp(dir + "/taken.safetensors") == "keep me");

  // A run without EMA has none to export.
  const std::string no_ema = dir + "/no-ema";
  REQUIRE(test::run(1, "--steps 2 --ema-decay 0 --run-dir " + no_ema, no_ema + ".log") == 0);
  r = dtckpt("export " + no_ema + " --out " + dir + "/e.safetensors --weights ema");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("has no EMA weights"));
  CHECK_FALSE(fs::exists(dir + "/e.safetensors"));

  // Weights of another width: the trainer names the first tensor that does not fit.
  REQUIRE(dtckpt("export " + run + " --out " + dir + "/w.safetensors").status == 0);
  const std::string wide = dir + "/wide";
  CHECK(test::run(1, "--steps 2 --init-weights " + dir + "/w.safetensors --run-dir " + wide, wide + ".log",
                  " --model-set model_channels=8 channel_mult=1,2 transformer_depth=0,1 num_res_blocks=1 head_dim=8 "
                  "norm_groups=4") != 0);
  CHECK_THAT(test::slurp(wide + ".log"), Catch::Contains("w.safetensors: tensor '") && Catch::Contains("has shape"));
  CHECK_FALSE(fs::exists(wide + "/ckpt"));

  // Weights with a NaN: refused at start-up, naming the tensor, before the run directory exists.
  const auto nan = test::run_process(
      std::string(DT_NUMPY_PYTHON) + " -c \"import struct, json; p = '" + dir +
      "/w.safetensors'; b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); "
      "k = sorted(x for x in h if x != '__metadata__')[0]; o = 8 + n + h[k]['data_offsets'][0]; "
      "open(p + '.nan', 'wb').write(b[:o] + struct.pack('<f', float('nan')) + b[o + 4:]); print(k)\"");
  REQUIRE(nan.status == 0);
  const std::string nan_run = dir + "/nan";
  CHECK(test::run(1, "--steps 2 --init-weights " + dir + "/w.safetensors.nan --run-dir " + nan_run, nan_run + ".log") ==
        2);
  CHECK_THAT(
      test::slurp(nan_run + ".log"),
      Catch::Contains("w.safetensors.nan: tensor '" + nan.out.substr(0, nan.out.size() - 1) + "' has 1 non-finite"));
  CHECK_FALSE(fs::exists(nan_run));

  // A corrupt file is a configuration error: exit 2 before the run directory exists.
  std::ofstream(dir + "/corrupt.safetensors") << "not a weights file at all";
  const std::string corrupt = dir + "/corrupt";
  CHECK(test::run(1, "--steps 2 --init-weights " + dir + "/corrupt.safetensors --run-dir " + corrupt,
                  corrupt + ".log") == 2);
  CHECK_THAT(test::slurp(corrupt + ".log"), Catch::Contains("corrupt.safetensors: not a safetensors file"));
  CHECK_FALSE(fs::exists(corrupt));
}

TEST_CASE("validate: a sound checkpoint passes; NaNs, missing datasets and newer formats are named") {
  const std::string run = trained_run();
  auto r = dtckpt("validate " + run);
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("sound (format 3"));
  // The recorded checksums are zlib's CRC-32 of each dataset's little-endian fp32 bytes, as an
  // independent reader (h5py + Python's zlib) computes them from the file.
  const auto sums = test::run_process(
      std::string(DT_NUMPY_PYTHON) + " -c \"import h5py, json, zlib, numpy; d = '" + run +
      "/ckpt/step_00000004'; m = json.load(open(d + '/meta.json')); f = h5py.File(d + '/state.h5', 'r'); "
      "bad = [k for k, v in m['checksums'].items() if v != 'crc32:%08x' % "
      "zlib.crc32(f[k][...].astype('<f4').tobytes())]; "
      "print(len(m['checksums']), 'checksums,', len(bad), 'wrong')\"");
  INFO(sums.out);
  CHECK(sums.status == 0);
  CHECK_THAT(sums.out, Catch::Contains(" 0 wrong") && !Catch::Contains("0 checksums"));

  // One flipped bit of a finite value: only the checksum can see it.
  const std::string flipped = test::scratch_dir("dtckpt-flipped") + "/step_00000004";
  fs::copy(run + "/ckpt/step_00000004", flipped, fs::copy_options::recursive);
  const auto flip = test::run_process(
      std::string(DT_NUMPY_PYTHON) + " -c \"import h5py; f = h5py.File('" + flipped +
      "/state.h5', 'r+'); d = f['units/conv_out/m']; a = d[...]; a.view('<u4')[1] ^= 1; d[...] = a; f.close()\"");
  INFO(flip.out);
  REQUIRE(flip.status == 0);
  r = dtckpt("validate " + flipped);
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("units/conv_out/m: corrupt: its checksum is") && !Catch::Contains("non-finite"));

  const std::string dir = test::scratch_dir("dtckpt-validate") + "/step_00000004";
  fs::copy(run + "/ckpt/step_00000004", dir, fs::copy_options::recursive);
  const auto meta = nlohmann::json::parse(test::slurp(dir + "/meta.json"));
  const std::string first = meta["units"].front()["name"], last = meta["units"].back()["name"];
  // Break the copy with h5py: a NaN in the first unit's parameters, the last unit's v deleted.
  const auto py = test::run_process(std::string(DT_NUMPY_PYTHON) + " -c \"import h5py, numpy; f = h5py.File('" + dir +
                                    "/state.h5', 'r+'); f['units/" + first + "/params'][3] = numpy.nan; del f['units/" +
                                    last + "/v']; f.close()\"");
  INFO(py.out);
  REQUIRE(py.status == 0);
  r = dtckpt("validate " + dir);
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("units/" + first + "/params: 1 non-finite values") &&
                        Catch::Contains("units/" + last + "/v: missing") && Catch::Contains("BROKEN"));
  r = dtckpt("validate " + dir + " --structure-only");
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("/v: missing") && !Catch::Contains("non-finite"));

  auto newer = meta;
  newer["format_version"] = 99;
  std::ofstream(dir + "/meta.json") << newer.dump();
  r = dtckpt("validate " + dir);
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("checkpoint format 99") && Catch::Contains("newer dtrainer"));
}
