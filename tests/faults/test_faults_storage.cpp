// The fault tests of storage and inputs (ctest -L faults): what dtrainer promises under faults and bad inputs
// (docs/RELIABILITY.md) — no hang, no lost progress beyond the last checkpoint, no silent wrong
// result, clear errors that name the file, field or rank — checked by doing the fault to a real run:
//  - a full disk (a small tmpfs where this test may mount one) and failing writes on one rank
//    (dtfault, an LD_PRELOAD injector: ENOSPC / EIO after N bytes, in one chosen rank);
//  - signals (SIGINT, SIGTERM to mpirun), a killed rank, a stopped rank (the watchdog);
//  - shards truncated or rewritten under a running job;
//  - two trainers on one run directory, resumes that must be refused, corrupt checkpoints;
//  - malformed job files and bad option values.
#include <catch2/catch.hpp>

#include "fault_helpers.h"

using namespace dtrainer;
using namespace dtrainer::test::faults;

TEST_CASE(
    "a write failing on one rank mid-checkpoint ends every rank, naming the rank, file and cause; the last checkpoint "
    "stays") {
  struct Case {
    const char* err;
    int rank;
    const char* files;  // which of the step-4 checkpoint's files fail...
    int64_t after;      // ...after this many bytes written to them on that rank
    const char* where;  // what the message names
  };
  for (const Case& k :
       {Case{"ENOSPC", 1, ".tmp-step_00000004/", 300000, "state.h5: cannot write dataset"},  // a rank's data
        Case{"EIO", 0, ".tmp-step_00000004/", 300000, "state.h5: cannot write dataset"},
        Case{"ENOSPC", 0, ".tmp-step_00000004/", 2000,
             "state.h5: cannot write the checkpoint file's structure"},  // HDF5's
        Case{"EDQUOT", 0, ".tmp-step_00000004/meta.json", 0,
             "meta.json: cannot write"}}) {  // the manifest, after the data
    const std::string dir = test::scratch_dir(std::string("write-fault-") + k.err + "-" + std::to_string(k.after));
    INFO(k.err << " on rank " << k.rank << " after " << k.after << " bytes of " << k.files << "\n"
               << slurp(dir + ".log"));
    const std::string cmd = with_fault(command(2, "--steps 6 --ckpt-every 2 --keep-ckpts 3 --run-dir " + dir), k.files,
                                       k.err, k.after, k.rank);
    const int rc = run_bounded(cmd, dir + ".log");
    const std::string log = slurp(dir + ".log");
    CHECK(rc == 1);  // (not 124: a hang; not 139: a crash in a library's clean-up)
    CHECK_THAT(log, Catch::Contains("rank " + std::to_string(k.rank) + ": checkpoint of step 4 failed") &&
                        Catch::Contains(k.err) && Catch::Contains(k.where) &&
                        Catch::Contains("step_00000002, is untouched"));
    CHECK(validates(step_dir(dir, 2)));
    CHECK_FALSE(fs::exists(step_dir(dir, 4)));
    CHECK_FALSE(has_temporaries(dir + "/ckpt"));
    // ...and the run resumes from it once the disk is sound again.
    REQUIRE(run(2, "--steps 6 --ckpt-every 2 --run-dir " + dir, dir + ".resumed.log") == 0);
    CHECK_THAT(slurp(dir + ".resumed.log"), Catch::Contains("at step 2"));
  }
}

TEST_CASE("dtdata synth on a full disk: exit 2 with the cause, no shard and no temporary left") {
  const std::string dir = test::scratch_dir("synth-full");
  const auto r = test::run_process("DT_FAULT_PATH=" + dir + " DT_FAULT_AFTER=20000 LD_PRELOAD=" + DTFAULT_PATH + " " +
                                   DTDATA_PATH + " synth --out " + dir + "/shapes --images 64");
  INFO(r.out);
  CHECK(r.status == 2);
  CHECK_THAT(r.out, Catch::Contains("No space left on device (ENOSPC)"));
  CHECK(fs::is_empty(dir + "/shapes"));
}

TEST_CASE("a full disk: the checkpoint is refused before anything is written, every rank exits non-zero") {
  const std::string mnt = test::scratch_dir("tmpfs");
  // A real full disk where this test may mount a small tmpfs (root with CAP_SYS_ADMIN); else skipped.
  // 6 MiB: the first checkpoint of the tiny UNet (~4 MB) fits, the second does not.
  if (mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=6m") != 0) {
    WARN("skipped: cannot mount a 6 MiB tmpfs at " << mnt << " (" << std::strerror(errno)
                                                   << "; needs root with CAP_SYS_ADMIN)");
    return;
  }
  struct Unmount {
    std::string at;
    ~Unmount() { umount2(at.c_str(), MNT_DETACH); }
  } unmount{mnt};
  const std::string dir = mnt + "/run";
  INFO(slurp(mnt + "/../tmpfs.log"));
  const int rc =
      run_bounded(command(2, "--steps 8 --ckpt-every 2 --keep-ckpts 8 --run-dir " + dir), mnt + "/../tmpfs.log");
  const std::string log = slurp(mnt + "/../tmpfs.log");
  CHECK(rc != 0);
  CHECK(rc != 124);
  CHECK_THAT(log, Catch::Contains("not enough free space for the checkpoint") && Catch::Contains("is untouched"));
  int sound = 0;
  for (int64_t s = 2; s <= 8; s += 2)
    sound += fs::exists(step_dir(dir, s)) ? (validates(step_dir(dir, s)) ? 1 : -100) : 0;
  CHECK(sound >= 1);  // every checkpoint there is whole, and at least the first fitted
  CHECK_FALSE(has_temporaries(dir + "/ckpt"));
}

TEST_CASE(
    "metrics and config writes are checked: a failing append ends the run naming the file; a resume on a full disk "
    "keeps config.toml") {
  const std::string dir = test::scratch_dir("metrics-fault");
  {
    INFO(slurp(dir + ".log"));
    // (the third record or so fails: step 2's checkpoint is written before)
    const int rc = run_bounded(with_fault(command(2, "--steps 8 --ckpt-every 2 --align-every 0 --run-dir " + dir),
                                          "metrics.jsonl", "EIO", 1200, 0),
                               dir + ".log");
    CHECK(rc != 0);
    CHECK(rc != 124);
    CHECK_THAT(slurp(dir + ".log"), Catch::Contains("metrics.jsonl: cannot append") && Catch::Contains("EIO"));
  }
  // Resuming when nothing can be written: config.toml and metrics.jsonl keep their content.
  const std::string config = slurp(dir + "/config.toml"), metrics = slurp(dir + "/metrics.jsonl");
  REQUIRE_FALSE(config.empty());
  REQUIRE(validates(step_dir(dir, 2)));
  const int rc =
      run_bounded(with_fault(command(2, "--steps 8 --lr 5e-4 --run-dir " + dir), dir, "ENOSPC", 0), dir + ".b.log");
  INFO(slurp(dir + ".b.log"));
  CHECK(rc != 0);
  CHECK_THAT(slurp(dir + ".b.log"), Catch::Contains("ENOSPC") && Catch::Contains("config.toml"));
  CHECK(slurp(dir + "/config.toml") == config);
  CHECK(slurp(dir + "/metrics.jsonl") == metrics);
}

TEST_CASE("a shard truncated or rewritten under a running job stops it, naming the file") {
  for (const std::string how : {"truncated", "rewritten"}) {
    const std::string dir = test::scratch_dir("shard-" + how), data = dir + "-data";
    fs::copy(test::data_root() + "/train", data, fs::copy_options::recursive);
    std::string shard;
    for (const auto& e : fs::directory_iterator(data))
      if (e.path().extension() == ".h5") shard = e.path().string();
    REQUIRE_FALSE(shard.empty());
    std::string cmd = command(1, "--steps 100000 --prefetch 0 --run-dir " + dir);
    cmd.replace(cmd.find(test::data_root() + "/train"), (test::data_root() + "/train").size(), data);
    test::SpawnedRun child(cmd + " > " + dir + ".log 2>&1");
    REQUIRE(wait_for_steps(dir, 3));
    if (how == "truncated") {
      fs::resize_file(shard, fs::file_size(shard) / 2);
    } else {  // cp over it: the same size, other bytes (here the eval shard's bytes, padded)
      std::string bytes = slurp(shard);
      for (size_t i = bytes.size() / 2; i < bytes.size(); ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
      std::ofstream(shard, std::ios::binary | std::ios::trunc) << bytes;
    }
    const int status = child.wait_for(60);
    INFO(how << "\n" << slurp(dir + ".log"));
    REQUIRE(status != -1);
    CHECK(exit_code(status) != 0);
    CHECK_THAT(slurp(dir + ".log"), Catch::Contains(shard) && Catch::Contains("changed while the run reads it"));
  }
}

TEST_CASE("two trainers on one run directory: the second is refused naming the holder, the first is unharmed") {
  const std::string dir = test::scratch_dir("two-trainers");
  test::SpawnedRun first(command(1, "--steps 100000 --ckpt-every 0 --run-dir " + dir) + " > " + dir + ".a.log 2>&1");
  REQUIRE(wait_for_steps(dir, 2));
  const int rc = run(2, "--steps 5 --run-dir " + dir, dir + ".b.log");
  const std::string log = slurp(dir + ".b.log");
  INFO(log);
  CHECK(rc == 2);
  CHECK_THAT(log, Catch::Contains("in use by another process: pid") && Catch::Contains("--steps 100000"));
  const size_t before = test::training_records(dir).size();
  REQUIRE(wait_for_steps(dir, before + 2));  // still training
  first.signal(SIGUSR1);                     // (forwarded by mpirun: the rank checkpoints and mpirun exits 0)
  CHECK(exit_code(first.wait()) == 0);
  CHECK(fs::exists(dir + "/PREEMPTED"));
}

TEST_CASE(
    "resuming an older checkpoint replaces the abandoned trajectory's steps and never lets --resume auto pick them") {
  const std::string dir = test::scratch_dir("trajectory");
  REQUIRE(run(1, "--steps 6 --ckpt-every 2 --keep-ckpts 3 --run-dir " + dir, dir + ".a.log") == 0);
  const std::string old4 = slurp(step_dir(dir, 4) + "/meta.json");
  // Back to step 2 with another learning rate: a different trajectory from step 3 on.
  REQUIRE(run(1, "--steps 6 --ckpt-every 2 --keep-ckpts 3 --lr 2e-4 --resume " + step_dir(dir, 2) + " --run-dir " + dir,
              dir + ".b.log") == 0);
  const std::string log = slurp(dir + ".b.log");
  INFO(log);
  CHECK_THAT(log, Catch::Contains("replacing") && Catch::Contains("superseded"));
  const auto meta4 = nlohmann::json::parse(slurp(step_dir(dir, 4) + "/meta.json"));
  CHECK(meta4.dump() != nlohmann::json::parse(old4).dump());
  CHECK_THAT(meta4["config_toml"].get<std::string>(), Catch::Contains("lr = 0.00020000000000000001"));
  CHECK(validates(step_dir(dir, 2)));  // the one resumed from, kept (keep_ckpts 3: 2, 4, 6)
  CHECK(fs::exists(dir + "/ckpt/superseded/step_00000006"));
  const auto meta6 = nlohmann::json::parse(slurp(step_dir(dir, 6) + "/meta.json"));
  CHECK_THAT(meta6["config_toml"].get<std::string>(), Catch::Contains("lr = 0.00020000000000000001"));
}

TEST_CASE("a finished run extended with more steps loses its DONE: a preemption then leaves only PREEMPTED") {
  const std::string dir = test::scratch_dir("stale-done");
  REQUIRE(run(1, "--steps 3 --run-dir " + dir, dir + ".a.log") == 0);
  REQUIRE(fs::exists(dir + "/DONE"));
  test::SpawnedRun more(command(1, "--steps 100000 --ckpt-every 0 --run-dir " + dir) + " > " + dir + ".b.log 2>&1");
  REQUIRE(wait_for_steps(dir, 5));
  CHECK_FALSE(fs::exists(dir + "/DONE"));
  more.signal(SIGUSR1);
  CHECK(exit_code(more.wait()) == 0);
  CHECK_FALSE(fs::exists(dir + "/DONE"));
  CHECK(fs::exists(dir + "/PREEMPTED"));
}

TEST_CASE("a refused resume changes nothing in the run directory and says what differs, the right way round") {
  const std::string dir = test::scratch_dir("refused");
  REQUIRE(run(1, "--steps 4 --run-dir " + dir, dir + ".a.log") == 0);
  const std::string config = slurp(dir + "/config.toml"), metrics = slurp(dir + "/metrics.jsonl");
  struct Case {
    std::string args, expect;
  };
  for (const Case& k :
       {Case{"--global-batch 16",
             "global_batch: the checkpoint " + step_dir(dir, 4) + " was saved with global_batch = 8, this run has 16"},
        Case{"--seed 7", "seed: the checkpoint " + step_dir(dir, 4) + " was saved with seed = 0, this run has 7"},
        Case{"--model-set model_channels=24",
             "saved with model_set = [model_channels=16, channel_mult=1,2, transformer_depth=0,1, "
             "num_res_blocks=1, head_dim=8, norm_groups=4], this run has [model_channels=16, "}}) {
    const int rc = run(1, "--steps 8 " + k.args + " --run-dir " + dir, dir + ".b.log");
    const std::string log = slurp(dir + ".b.log");
    INFO(k.args << "\n" << log);
    CHECK(rc == 2);
    CHECK_THAT(log, Catch::Contains(k.expect));
    CHECK(slurp(dir + "/config.toml") == config);
    CHECK(slurp(dir + "/metrics.jsonl") == metrics);
  }
}

TEST_CASE("a corrupt newest checkpoint is named, with the sound one before it offered by path") {
  const std::string dir = test::scratch_dir("corrupt-newest");
  REQUIRE(run(1, "--steps 4 --ckpt-every 2 --keep-ckpts 3 --run-dir " + dir, dir + ".a.log") == 0);
  // One flipped bit in the newest checkpoint's data (finite still: only its checksum can tell).
  const auto py = test::run_process(
      std::string(DT_NUMPY_PYTHON) + " -c \"import h5py; f = h5py.File('" + step_dir(dir, 4) +
      "/state.h5', 'r+'); d = f['units/conv_out/params']; a = d[...]; a.view('<u4')[0] ^= 1; d[...] = a; f.close()\"");
  REQUIRE(py.status == 0);
  const int rc = run(1, "--steps 8 --run-dir " + dir, dir + ".b.log");
  const std::string log = slurp(dir + ".b.log");
  INFO(log);
  CHECK(rc != 0);
  CHECK_THAT(log, Catch::Contains("units/conv_out/params: corrupt") && Catch::Contains("--resume " + step_dir(dir, 2)));
  REQUIRE(run(1, "--steps 8 --ckpt-every 2 --keep-ckpts 3 --resume " + step_dir(dir, 2) + " --run-dir " + dir,
              dir + ".c.log") == 0);  // as offered
  // A newest checkpoint cut short (a copy that stopped): refused before anything changes, the sound one offered.
  const std::string metrics = slurp(dir + "/metrics.jsonl");
  fs::resize_file(step_dir(dir, 8) + "/state.h5", fs::file_size(step_dir(dir, 8) + "/state.h5") / 3);
  const int rc2 = run(1, "--steps 10 --run-dir " + dir, dir + ".d.log");
  const std::string log2 = slurp(dir + ".d.log");
  INFO(log2);
  CHECK(rc2 == 2);
  CHECK_THAT(log2, Catch::Contains("cannot read the checkpoint") && Catch::Contains(step_dir(dir, 8)) &&
                       Catch::Contains("--resume " + step_dir(dir, 6)));
  CHECK(slurp(dir + "/metrics.jsonl") == metrics);
}
