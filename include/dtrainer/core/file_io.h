#pragma once
// Checked file writes. Every write of the project goes through these (or checks as strictly):
// a failure (disk full, read-only file system, quota, I/O error) throws Error naming the file and
// the cause, and nothing half-written ever replaces a good file.
//
//   write_file_atomic(p, text)   p.tmp-PID written, flushed, fsynced, renamed over p, directory
//                                fsynced; on failure p is untouched and the temporary removed
//   append_to_file(p, text)      the whole text appended (short writes retried), or an Error
//   temporary_path(p)            the name write_file_atomic uses (p.tmp-PID), for writers that
//                                produce a file with a library (HDF5, libpng) and publish it with
//                                publish_file()

#include <filesystem>
#include <string>
#include <string_view>

namespace dtrainer {

// "No space left on device (ENOSPC)": strerror with the symbolic name, for messages.
std::string errno_message(int err);

std::filesystem::path temporary_path(const std::filesystem::path& path);

void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

// Appends `text` to `path` (created when missing). durable: fsync before returning.
void append_to_file(const std::filesystem::path& path, std::string_view text, bool durable = false);

// fsync of a file or a directory (a rename is durable once its directory is synced).
void fsync_path(const std::filesystem::path& path);

// Moves a complete `tmp` over `path` (rename, then fsync of the directory); removes tmp and throws
// on failure.
void publish_file(const std::filesystem::path& tmp, const std::filesystem::path& path);

// Why writes in `dir` fail, when a library (HDF5, MPI-IO) did not say: a read-only file system, or
// the errno of a small probe write there ("No space left on device (ENOSPC)", a quota, EIO), or
// that other writes succeed. For error messages.
std::string diagnose_write_failure(const std::filesystem::path& dir);

// The whole file; throws Error naming it when it cannot be read.
std::string read_file(const std::filesystem::path& path);

// Removes every `*.tmp-<digits>` file directly in `dir` (leftovers of a killed writer) and returns
// how many. Only for a directory whose writers are known to be gone (the caller holds its
// DirectoryLock). Errors are ignored: a cleanup.
int remove_stale_temporaries(const std::filesystem::path& dir) noexcept;

}  // namespace dtrainer
