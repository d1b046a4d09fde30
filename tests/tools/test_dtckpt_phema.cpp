// Post-hoc EMA end to end, as a user runs it: dtrainer with ema = "phema" under mpirun, then
// dtckpt phema / inspect / validate on its snapshots.
//  - sharding invariance: 1 rank replicate, 2 ranks zero3 (fp32, and fp16 snapshots) and 4 ranks
//    zero3 resumed on 2 ranks zero2 save the same snapshots (1e-6; fp16: its rounding);
//  - keep_ckpts never removes snapshots; a resume from an older checkpoint sets the abandoned
//    trajectory's snapshots aside and writes the same ones again;
//  - a reconstruction at a tracked sigma_rel and a snapshot time is that snapshot; others match
//    an independent numpy solve over the snapshot files (tests/ckpt/phema_reference.py) to 1e-6;
//  - bad input is refused by name: sigma_rel outside EDM2's range (dtckpt and dtrainer), a
//    snapshot interval off the batch, a time without a snapshot, a run without snapshots,
//    snapshots of another model or run, a phema resume from a checkpoint without profiles,
//    a corrupt or incomplete snapshot (validate).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/ckpt/phema_snapshot.h"
#include "run_process.h"
#include "train/dtrainer_runner.h"

using namespace dtrainer;
namespace fs = std::filesystem;

namespace {

test::ProcessResult dtckpt(const std::string& args) {
  return test::run_process(std::string(DTCKPT_PATH) + " " + args + " 2>&1");
}

// eps = 1: AdamW turns the last-bit differences of another rank count's gradient sums into
// lr-sized steps wherever a gradient is near zero (the sign of m / sqrt(v)); a large eps keeps the
// comparisons about the averaging, which is elementwise and exact given the weights.
const char* kPhema =
    " --ema phema --phema-sigma-rel 0.05,0.1 --phema-snapshot-images 16 --ckpt-every 4 --keep-ckpts 1 --eps 1";

// A run of 8 steps (global batch 8: a snapshot every 2 steps, at 16, 32, 48, 64 images).
std::string phema_run(const std::string& name, int ranks, const std::string& args) {
  const std::string d = test::scratch_dir("phema-" + name);
  const int rc = test::run(ranks, std::string(kPhema) + " --run-dir " + d + " " + args, d + ".log");
  INFO(test::slurp(d + ".log"));
  REQUIRE(rc == 0);
  return d;
}

const std::string& replicate_run() {  // the reference: one rank, the whole vector
  static const std::string d = phema_run("replicate", 1, "--steps 8 --phema-snapshot-dtype fp32");
  return d;
}

const std::string& zero3_fp16_run() {
  static const std::string d = phema_run("zero3", 2, "--steps 8 --sharding zero3");
  return d;
}

// Max |a - b| / max |b| over every profile of every unit of two snapshots (directories).
double snapshot_difference(const std::string& a, const std::string& b) {
  const ckpt::PhemaSnapshotReader sa(a), sb(b);
  double worst = 0;
  for (const auto& u : sb.layout())
    for (const auto& p : sb.profiles()) {
      const torch::Tensor x = sa.read(u.unit, p.name, u.numel), y = sb.read(u.unit, p.name, u.numel);
      worst = std::max(worst, (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-30));
    }
  return worst;
}
// The same for two runs' snapshots at `images`.
double snapshot_difference(const std::string& a, const std::string& b, int64_t images) {
  const std::string name = "/phema/" + ckpt::phema_snapshot_name(images);
  return snapshot_difference(a + name, b + name);
}

void numpy_check(const std::string& root, int64_t at, double sigma, const std::string& file) {
  const auto r = test::run_process(std::string(DT_NUMPY_PYTHON) + " " + PHEMA_REFERENCE + " files " + root + " " +
                                   std::to_string(at) + " " + std::to_string(sigma) + " " + file);
  INFO(r.out);
  CHECK(r.status == 0);
}

}  // namespace

TEST_CASE("snapshots do not depend on the sharding or the rank count, across a resume on other ranks") {
  const std::string ref = replicate_run();
  const auto snaps = ckpt::complete_phema_snapshots(ref + "/phema");
  REQUIRE(snaps.size() == 4);  // keep_ckpts = 1 rotated checkpoints, never snapshots
  CHECK(snaps.front().first == 16);
  CHECK(snaps.back().first == 64);
  // 4 ranks zero3 for 4 steps, then resumed on 2 ranks zero2 to step 8.
  const std::string d = test::scratch_dir("phema-resumed");
  REQUIRE(test::run(4, std::string(kPhema) + " --phema-snapshot-dtype fp32 --steps 4 --sharding zero3 --run-dir " + d,
                    d + ".log") == 0);
  REQUIRE(test::run(2, std::string(kPhema) + " --phema-snapshot-dtype fp32 --steps 8 --sharding zero2 --run-dir " + d,
                    d + ".2.log") == 0);
  CHECK_THAT(test::slurp(d + ".2.log"), Catch::Contains("resumed from"));
  for (const int64_t images : {16, 32, 48, 64}) {
    INFO("images " << images);
    CHECK(snapshot_difference(d, ref, images) < 1e-6);
  }
  // fp16 storage: the same values, rounded (half an ulp: 2^-11 relative, plus the runs' 1e-7).
  const std::string half = zero3_fp16_run();
  for (const int64_t images : {16, 64}) CHECK(snapshot_difference(half, ref, images) < 5.0e-4);
  const ckpt::PhemaSnapshotReader s(half + "/phema/" + ckpt::phema_snapshot_name(64));
  CHECK(s.dtype() == torch::kFloat16);
  CHECK(s.meta()["saved_by_world_size"] == 2);
}

TEST_CASE("a resume from an older checkpoint sets the abandoned snapshots aside and writes them again") {
  const std::string d = test::scratch_dir("phema-rewind");  // (2 ranks zero3: also the 1-rank run's snapshots)
  const std::string args =
      std::string(kPhema) + " --phema-snapshot-dtype fp32 --steps 8 --keep-ckpts 2 --sharding zero3";
  REQUIRE(test::run(2, args + " --run-dir " + d, d + ".log") == 0);
  for (const int64_t images : {16, 32, 48, 64}) CHECK(snapshot_difference(d, replicate_run(), images) < 1e-6);
  REQUIRE(fs::exists(d + "/ckpt/step_00000004"));
  REQUIRE(test::run(2, args + " --resume " + d + "/ckpt/step_00000004 --run-dir " + d, d + ".2.log") == 0);
  const std::string log = test::slurp(d + ".2.log");
  CHECK_THAT(log, Catch::Contains("img_000000000048") && Catch::Contains("moved aside"));
  CHECK(fs::exists(d + "/phema/superseded/img_000000000048"));
  CHECK(fs::exists(d + "/phema/superseded/img_000000000064"));
  CHECK(ckpt::complete_phema_snapshots(d + "/phema").size() == 4);
  // The same configuration on the same ranks is deterministic: the rewritten snapshots are the abandoned ones.
  for (const char* name : {"img_000000000048", "img_000000000064"})
    CHECK(snapshot_difference(d + "/phema/" + name, d + "/phema/superseded/" + name) == 0.0);
}

TEST_CASE("dtckpt phema: a tracked profile at a snapshot time is that snapshot; others match numpy's solve") {
  const std::string ref = replicate_run(), half = zero3_fp16_run();
  const std::string out = test::scratch_dir("phema-out");
  auto r = dtckpt("phema " + ref + " --sigma-rel 0.05 --at-images 32 --out " + out + "/tracked.safetensors");
  INFO(r.out);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("at 32 images") && Catch::Contains("fit error 0"));
  {
    const ckpt::PhemaSnapshotReader s(ref + "/phema/" + ckpt::phema_snapshot_name(32));
    const auto check = test::run_process(std::string(DT_NUMPY_PYTHON) + " " + PHEMA_REFERENCE + " files " + ref +
                                         "/phema 32 0.05 " + out + "/tracked.safetensors");
    INFO(check.out);
    CHECK(check.status == 0);
  }
  // Several widths at once, and the fp16 run's (the sum of its stored values, exactly as numpy sums them).
  r = dtckpt("phema " + ref + " --sigma-rel 0.03,0.07,0.15,0.25 --out " + out + "/w-{sigma_rel}.safetensors --json");
  REQUIRE(r.status == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["at_images"] == 64);
  CHECK(j["inputs"].size() == 8);  // 4 times x 2 profiles
  // The fit error (the profile's L2 misfit) is small between the tracked widths, larger outside them
  // (4 snapshot times are a coarse cover).
  for (const auto& o : j["outputs"]) {
    INFO("sigma_rel " << o["sigma_rel"] << ": fit error " << o["relative_error"]);
    const double s = o["sigma_rel"].get<double>();
    CHECK(o["relative_error"].get<double>() < (s > 0.05 && s < 0.1 ? 1e-2 : 0.3));
  }
  for (const auto& [sigma, name] : std::vector<std::pair<double, std::string>>{{0.07, "0.07"}, {0.25, "0.25"}})
    numpy_check(ref + "/phema", 64, sigma, out + "/w-" + name + ".safetensors");
  r = dtckpt("phema " + half + " --sigma-rel 0.12 --at-images 48");
  REQUIRE(r.status == 0);
  const std::string file = half + "/posthoc/phema_0.12-img_000000000048.safetensors";
  CHECK(fs::exists(file));
  numpy_check(half + "/phema", 48, 0.12, file);

  // inspect lists the snapshots; validate checks them.
  r = dtckpt("inspect " + ref);
  CHECK_THAT(r.out, Catch::Contains("phema snapshots: 4") && Catch::Contains("phema_0.05, phema_0.1"));
  r = dtckpt("validate " + half);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("sound") && Catch::Contains("4 phema snapshots checked"));
}

TEST_CASE("post-hoc EMA refuses bad input by name, exits non-zero and writes nothing") {
  const std::string ref = replicate_run();
  const std::string dir = test::scratch_dir("phema-bad");

  auto r = dtckpt("phema " + ref + " --sigma-rel 0.3 --out " + dir + "/x.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("--sigma-rel: 0.3 is outside") && Catch::Contains("0.2887"));
  r = dtckpt("phema " + ref + " --sigma-rel 0.07 --at-images 40 --out " + dir + "/x.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("--at-images: 40 is not a snapshot's time"));
  r = dtckpt("phema " + ref + " --sigma-rel 0.07,0.1 --out " + dir + "/x.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("{sigma_rel}"));
  fs::create_directories(dir + "/empty-run");
  r = dtckpt("phema " + dir + "/empty-run --sigma-rel 0.07 --out " + dir + "/x.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("has no phema snapshots") && Catch::Contains("ema = \"phema\""));
  r = dtckpt("phema " + dir + "/empty-run/phema --sigma-rel 0.07 --out " + dir + "/x.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("empty-run/phema/img_*"));
  CHECK_FALSE(fs::exists(dir + "/x.safetensors"));

  // Snapshots of another run (its seed) and of another model mixed into the run's.
  const std::string mixed = dir + "/mixed";
  fs::create_directories(mixed);
  fs::copy(ref + "/phema", mixed + "/phema", fs::copy_options::recursive);
  const std::string s16 = mixed + "/phema/" + ckpt::phema_snapshot_name(16);
  auto meta = nlohmann::json::parse(test::slurp(s16 + "/meta.json"));
  meta["run"]["seed"] = 99;
  std::ofstream(s16 + "/meta.json") << meta.dump();
  r = dtckpt("phema " + mixed + " --sigma-rel 0.07 --out " + dir + "/x.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("img_000000000016: belongs to another run"));
  const std::string other = test::scratch_dir("phema-other-model");  // (its snapshots in bf16)
  REQUIRE(test::run(1,
                    std::string(kPhema) + " --steps 2 --phema-snapshot-dtype bf16 --run-dir " + other +
                        " --model-set model_channels=8 channel_mult=1,2 transformer_depth=0,1 num_res_blocks=1 "
                        "head_dim=8 norm_groups=4",
                    other + ".log", "") == 0);
  {  // bf16 snapshots reconstruct as numpy sums them (h5py reads the bf16 type through HDF5)
    REQUIRE(ckpt::PhemaSnapshotReader(other + "/phema/" + ckpt::phema_snapshot_name(16)).dtype() == torch::kBFloat16);
    r = dtckpt("phema " + other + " --sigma-rel 0.08 --out " + dir + "/bf16.safetensors");
    REQUIRE(r.status == 0);
    numpy_check(other + "/phema", 16, 0.08, dir + "/bf16.safetensors");
  }
  fs::remove_all(s16);
  fs::copy(other + "/phema/" + ckpt::phema_snapshot_name(16), s16, fs::copy_options::recursive);
  r = dtckpt("phema " + mixed + " --sigma-rel 0.07 --out " + dir + "/x.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("img_000000000016: was saved by another model"));
  r = dtckpt("validate " + mixed + "/phema");
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("was saved by another model") && Catch::Contains("BROKEN"));
  CHECK_FALSE(fs::exists(dir + "/x.safetensors"));

  // A flipped bit in a snapshot, and one without its COMPLETE marker.
  const std::string broken = dir + "/broken";
  fs::copy(ref + "/phema", broken, fs::copy_options::recursive);
  const std::string s32 = broken + "/" + ckpt::phema_snapshot_name(32);
  const auto flip = test::run_process(std::string(DT_NUMPY_PYTHON) + " -c \"import h5py; f = h5py.File('" + s32 +
                                      "/state.h5', 'r+'); d = f['units/conv_out/phema_0.1']; a = d[...]; "
                                      "a.view('<u4')[1] ^= 1; d[...] = a; f.close()\"");
  REQUIRE(flip.status == 0);
  fs::remove(broken + "/" + ckpt::phema_snapshot_name(48) + "/COMPLETE");
  r = dtckpt("validate " + broken);
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("units/conv_out/phema_0.1: checksum mismatch") &&
                        Catch::Contains("img_000000000048: incomplete"));
  r = dtckpt("phema " + broken + " --sigma-rel 0.07 --at-images 32 --out " + dir + "/x.safetensors");
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("checksum mismatch"));
  CHECK_FALSE(fs::exists(dir + "/x.safetensors"));

  // A profile beyond fp16's range: the snapshot is an error naming the unit and the remedy, and
  // nothing of it is left (weights with conv_out.bias = 1e6 as the starting point).
  r = dtckpt("export " + ref + " --weights params --out " + dir + "/w.safetensors");
  REQUIRE(r.status == 0);
  const auto fill = test::run_process(std::string(DT_NUMPY_PYTHON) + " " + PHEMA_REFERENCE + " fill " + dir +
                                      "/w.safetensors " + dir + "/big.safetensors conv_out.bias 1e6");
  INFO(fill.out);
  REQUIRE(fill.status == 0);
  const std::string big = dir + "/big-run";
  CHECK(test::run(2, std::string(kPhema) + " --steps 2 --init-weights " + dir + "/big.safetensors --run-dir " + big,
                  big + ".log") != 0);
  CHECK_THAT(test::slurp(big + ".log"), Catch::Contains("units/conv_out/phema_0.05") &&
                                            Catch::Contains("beyond fp16's range") &&
                                            Catch::Contains("phema_snapshot_dtype = bf16"));
  CHECK(ckpt::complete_phema_snapshots(big + "/phema").empty());
  CHECK_FALSE(fs::exists(big + "/phema/.tmp-" + ckpt::phema_snapshot_name(16)));
  CHECK(test::run(2,
                  std::string(kPhema) + " --steps 2 --phema-snapshot-dtype bf16 --init-weights " + dir +
                      "/big.safetensors --run-dir " + big,
                  big + ".2.log") == 0);  // (bf16 holds it)

  // The plan says what a phema run will keep.
  const std::string dry = dir + "/dry";
  REQUIRE(test::run(1, std::string(kPhema) + " --steps 9 --dry-run --run-dir " + dry, dry + ".log") == 0);
  CHECK_THAT(test::slurp(dry + ".log"), Catch::Contains("phema, sigma_rel 0.05 (gamma 16.97), 0.1 (gamma 6.94)") &&
                                            Catch::Contains("snapshots every 16 images (5 over the run, fp16"));

  // dtrainer: profiles outside the range, an interval off the batch; a phema resume of an EMA run.
  const std::string bad = dir + "/run";
  CHECK(test::run(1, "--steps 2 --ema phema --phema-sigma-rel 0.05,0.3 --run-dir " + bad, bad + ".log") == 2);
  CHECK_THAT(test::slurp(bad + ".log"), Catch::Contains("phema_sigma_rel: 0.3 is outside"));
  CHECK(test::run(1, "--steps 2 --ema phema --phema-snapshot-images 12 --run-dir " + bad, bad + ".log") == 2);
  CHECK_THAT(test::slurp(bad + ".log"),
             Catch::Contains("phema_snapshot_images: 12 is not a multiple of global_batch 8") &&
                 Catch::Contains("take 8 or 16"));
  CHECK_FALSE(fs::exists(bad));
  const std::string ema = dir + "/ema-run";
  REQUIRE(test::run(1, "--steps 2 --run-dir " + ema, ema + ".log") == 0);
  CHECK(test::run(1, "--steps 4 --ema phema --run-dir " + ema, ema + ".2.log") != 0);
  CHECK_THAT(test::slurp(ema + ".2.log"),
             Catch::Contains("has no phema_0.05 profile") && Catch::Contains("cannot start in a resumed run"));
  CHECK_FALSE(fs::exists(ema + "/phema"));
}
