#pragma once
// Some libraries cannot clean up after certain failures of their own. HDF5 1.10, after an
// H5Fclose that failed (a full disk while it flushed the file's structure), keeps a broken file
// in its tables and crashes in any later call on it — its own exit handlers included (atexit, and
// the hook MPI_Finalize runs): measured as exit 139 after the error had been printed. Code that
// hits such a failure calls forbid_library_cleanup(); programs then end with std::_Exit once their
// error is printed (parallel::run_ranks for MPI programs; tools' main()s check it), skipping those
// handlers. Nothing is lost: the failing write's temporary is removed before.

#include <string>

namespace dtrainer {

void forbid_library_cleanup(const std::string& why);
bool library_cleanup_forbidden();
const std::string& library_cleanup_forbidden_why();

}  // namespace dtrainer
