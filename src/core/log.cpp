#include "dtrainer/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace dtrainer {
namespace {

int g_rank = 0, g_world = 1;

std::shared_ptr<spdlog::logger> logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = spdlog::stderr_color_mt("dtrainer");
    lg->set_pattern("%H:%M:%S %^%l%$ %v");
    return lg;
  }();
  return l;
}

// Each line of a message is its own log line, with the time, level and rank: every line greps.
void log_lines(spdlog::level::level_enum level, const std::string& m) {
  size_t begin = 0;
  while (true) {
    const size_t end = m.find('\n', begin);
    logger()->log(level, log_prefix() + m.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return;
    begin = end + 1;
  }
}

}  // namespace

void set_log_rank(int rank, int world) {
  g_rank = rank;
  g_world = world;
}

std::string log_prefix() { return "[rank " + std::to_string(g_rank) + "/" + std::to_string(g_world) + "] "; }

void log_info(const std::string& m) {
  if (g_rank == 0) log_lines(spdlog::level::info, m);
}
void log_warn(const std::string& m) {
  if (g_rank == 0) log_lines(spdlog::level::warn, m);
}
void log_error(const std::string& m) { log_lines(spdlog::level::err, m); }

}  // namespace dtrainer
