#pragma once
// Rank-aware logging: every message carries its rank ("[rank 3] ..."); info and warnings are
// printed by rank 0 only, errors by every rank. Set the rank once with set_log_rank().

#include <string>

namespace dtrainer {

void set_log_rank(int rank, int world);
void log_info(const std::string& message);
void log_warn(const std::string& message);
void log_error(const std::string& message);
// The prefix a message of this rank gets, e.g. "[rank 3/16] ".
std::string log_prefix();

}  // namespace dtrainer
