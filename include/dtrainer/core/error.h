#pragma once
// dtrainer::Error — the one exception type libraries throw. It carries *where* the problem is
// (a config field, a file, a rank) so that tools can print an actionable message.

#include <exception>
#include <stdexcept>
#include <string>

namespace dtrainer {

class Error : public std::runtime_error {
 public:
  // `where` names the offending thing, e.g. "model.channel_mult" or "shards/part-0003.h5".
  Error(const std::string& where, const std::string& what)
      : std::runtime_error(where.empty() ? what : where + ": " + what), where_(where), detail_(what) {}
  const std::string& where() const { return where_; }
  const std::string& detail() const { return detail_; }  // the message without the location

 private:
  std::string where_, detail_;
};

// An error every rank of a job throws identically, after they agreed that one of them failed
// (parallel/agreement.h): the ranks can end normally, all with a non-zero exit, instead of one rank
// aborting the others. `where` names the failing rank ("rank 1"), `what` carries its message.
class CollectiveError : public Error {
 public:
  // rank: the lowest failing rank; failures: how many ranks failed (every rank: a check that
  // failed alike everywhere, such as a bad configuration).
  CollectiveError(const std::string& where, const std::string& what, int rank = -1, int failures = 1)
      : Error(where, what), rank_(rank), failures_(failures) {
    ++alive();
  }
  CollectiveError(const CollectiveError& o) : Error(o), rank_(o.rank_), failures_(o.failures_) { ++alive(); }
  int rank() const { return rank_; }
  int failures() const { return failures_; }
  ~CollectiveError() override { --alive(); }
  // CollectiveErrors in existence on this thread (one is unwinding when > 0 during unwinding).
  static int& alive() {
    thread_local int n = 0;
    return n;
  }

 private:
  int rank_ = -1, failures_ = 1;
};

// Whether the caller runs while an exception that only this rank holds unwinds the stack.
// Destructors that would wait for other ranks (a pending collective, a collective file close)
// must not do so then: the failing rank is on its way to ending the job, and waiting for peers
// that never come is a hang. (A CollectiveError is held by every rank alike: waiting is safe.)
inline bool unwinding() { return std::uncaught_exceptions() > 0 && CollectiveError::alive() == 0; }

}  // namespace dtrainer
