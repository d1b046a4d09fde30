#pragma once
// `rm -rf` for one path, without std::filesystem::remove_all. pip's LibTorch wheels export a
// statically linked copy of libstdc++'s filesystem code (pytorch/pytorch#133437); on a build
// against them our remove_all calls bound to that copy and crashed (H100 machine, PyTorch 2.11).
// This walks the tree with POSIX nftw instead.

#include <filesystem>
#include <string>

namespace dtrainer {

// Removes `path` and everything under it; nothing to do when it does not exist. Symbolic links
// are removed, never followed. Throws Error naming the entry that could not be removed.
void remove_tree(const std::filesystem::path& path);

// The same for cleanups that must not throw: false, with the reason in *why when given.
bool try_remove_tree(const std::filesystem::path& path, std::string* why = nullptr) noexcept;

}  // namespace dtrainer
