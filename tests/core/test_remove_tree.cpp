// remove_tree against what the file system then holds: trees with files, nested and empty
// directories and symbolic links (removed, their targets kept), a missing path, a single file.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "dtrainer/core/error.h"
#include "dtrainer/core/remove_tree.h"

namespace fs = std::filesystem;

namespace {
fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("dtrainer-remove-tree-" + std::to_string(getpid()) + "-" + name);
  fs::create_directories(p);
  return p;
}
}  // namespace

TEST_CASE("remove_tree removes a whole tree and never follows links out of it") {
  const fs::path root = scratch("tree"), outside = scratch("outside");
  std::ofstream(outside / "keep.txt") << "kept";
  fs::create_directories(root / "a" / "b" / "c");
  fs::create_directories(root / "empty");
  std::ofstream(root / "top.txt") << "x";
  std::ofstream(root / "a" / "b" / "c" / "deep.bin") << std::string(100000, 'y');
  fs::create_directory_symlink(outside, root / "a" / "link-to-outside");
  fs::create_symlink(outside / "keep.txt", root / "file-link");
  fs::create_symlink(root / "nowhere", root / "dangling");

  dtrainer::remove_tree(root);
  CHECK_FALSE(fs::exists(fs::symlink_status(root)));
  CHECK(fs::exists(outside / "keep.txt"));  // the links went, not what they point at
  std::ifstream in(outside / "keep.txt");
  std::string text;
  in >> text;
  CHECK(text == "kept");
  dtrainer::remove_tree(outside);
  CHECK_FALSE(fs::exists(outside));
}

TEST_CASE("remove_tree: a missing path is nothing to do, a file is removed") {
  const fs::path root = scratch("file");
  CHECK_NOTHROW(dtrainer::remove_tree(root / "no-such-dir"));
  CHECK(dtrainer::try_remove_tree(root / "no-such-dir"));
  std::ofstream(root / "f") << "1";
  dtrainer::remove_tree(root / "f");
  CHECK_FALSE(fs::exists(root / "f"));
  dtrainer::remove_tree(root);
  CHECK_FALSE(fs::exists(root));
}

TEST_CASE("remove_tree names the entry it cannot remove") {
  const fs::path root = scratch("busy");
  // A path through a regular file cannot exist: lstat fails with ENOTDIR, not ENOENT.
  std::ofstream(root / "plain") << "1";
  std::string why;
  CHECK_FALSE(dtrainer::try_remove_tree(root / "plain" / "child", &why));
  CHECK_THAT(why, Catch::Contains("plain/child"));
  CHECK_THROWS_AS(dtrainer::remove_tree(root / "plain" / "child"), dtrainer::Error);
  dtrainer::remove_tree(root);
}
