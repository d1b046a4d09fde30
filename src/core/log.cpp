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
}  // namespace

void set_log_rank(int rank, int world) {
  g_rank = rank;
  g_world = world;
}

std::string log_prefix() { return "[rank " + std::to_string(g_rank) + "/" + std::to_string(g_world) + "] "; }

void log_info(const std::string& m) {
  if (g_rank == 0) logger()->info(log_prefix() + m);
}
void log_warn(const std::string& m) {
  if (g_rank == 0) logger()->warn(log_prefix() + m);
}
void log_error(const std::string& m) { logger()->error(log_prefix() + m); }

}  // namespace dtrainer
