#pragma once
// dtrainer::Error — the one exception type libraries throw. It carries *where* the problem is
// (a config field, a file, a rank) so that tools can print an actionable message.

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

}  // namespace dtrainer
