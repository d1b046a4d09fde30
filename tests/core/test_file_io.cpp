// Checked writes, the directory lock and temporaries that never outlive their writer.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "dtrainer/core/dir_lock.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/temp_files.h"

using namespace dtrainer;
namespace fs = std::filesystem;

namespace {
fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("dtrainer-file-io-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}
}  // namespace

TEST_CASE("write_file_atomic replaces a file whole, and a failed write leaves the original and no temporary") {
  const fs::path dir = scratch("atomic");
  const fs::path f = dir / "config.toml";
  write_file_atomic(f, "first\n");
  write_file_atomic(f, "second\n");
  CHECK(read_file(f) == "second\n");
  // The temporary's name taken by a directory: the write fails before anything is replaced.
  fs::create_directories(temporary_path(f));
  CHECK_THROWS_WITH(write_file_atomic(f, "third\n"), Catch::Contains(f.string()) && Catch::Contains("cannot create"));
  CHECK(read_file(f) == "second\n");
  fs::remove(temporary_path(f));
  // /dev/full: every write fails with ENOSPC, and the message says so.
  CHECK_THROWS_WITH(append_to_file("/dev/full", "x\n"), Catch::Contains("No space left on device (ENOSPC)"));
  CHECK(remove_stale_temporaries(dir) == 0);
  std::ofstream(dir / "metrics.jsonl.tmp-12345") << "left by a killed writer";
  CHECK(remove_stale_temporaries(dir) == 1);
  CHECK_FALSE(fs::exists(dir / "metrics.jsonl.tmp-12345"));
  CHECK(fs::exists(f));
}

TEST_CASE("append_to_file appends whole records") {
  const fs::path f = scratch("append") / "metrics.jsonl";
  append_to_file(f, "{\"step\": 1}\n");
  append_to_file(f, "{\"step\": 2}\n", /*durable=*/true);
  CHECK(read_file(f) == "{\"step\": 1}\n{\"step\": 2}\n");
}

TEST_CASE("a directory lock is exclusive, names its holder, and is free again once released") {
  const fs::path dir = scratch("lock");
  {
    const DirectoryLock a(dir, "first holder --steps 9");
    CHECK_THROWS_WITH(DirectoryLock(dir, "second"),
                      Catch::Contains(dir.string()) &&
                          Catch::Contains("in use by another process: pid " + std::to_string(::getpid())) &&
                          Catch::Contains("first holder --steps 9"));
  }
  const DirectoryLock again(dir, "third");  // released with the first
  CHECK_THAT(read_file(dir / ".lock"), Catch::Contains("third"));
  // A process that dies holding it releases it: the kernel drops the lock with the process.
  const fs::path other = scratch("lock-dies");
  const pid_t child = fork();
  if (child == 0) {
    const DirectoryLock held(other, "child");
    ::kill(::getpid(), SIGKILL);
  }
  int status = 0;
  waitpid(child, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  CHECK_NOTHROW(DirectoryLock(other, "after the child"));
}

TEST_CASE("a tool interrupted by a signal removes its temporaries and dies of the signal") {
  const fs::path dir = scratch("signal");
  const std::string tmp = (dir / "weights.safetensors.tmp-1").string();
  const pid_t child = fork();
  if (child == 0) {
    remove_temp_files_on_signals();
    const TempFileGuard guard(tmp);
    std::ofstream(tmp) << "half a file";
    ::raise(SIGINT);
    ::_exit(0);  // (not reached)
  }
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGINT);
  CHECK_FALSE(fs::exists(tmp));
  // A released guard keeps the file (it was published).
  {
    const TempFileGuard guard(tmp);
    std::ofstream(tmp) << "whole";
    guard.release();
  }
  CHECK(fs::exists(tmp));
}
