#include "dtrainer/train/preemption.h"

#include <csignal>
#include <ctime>
#include <initializer_list>

namespace dtrainer::train {
namespace {
volatile std::sig_atomic_t g_signal = 0;
volatile std::time_t g_when = 0;  // when the first one arrived (time() is async-signal-safe)
extern "C" void on_preemption_signal(int sig) {
  if (g_signal == 0) g_when = std::time(nullptr);
  g_signal = sig;
}
}  // namespace

void install_preemption_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_preemption_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGUSR2}) sigaction(sig, &sa, nullptr);
}

bool preemption_requested() { return g_signal != 0; }
int preemption_signal() { return g_signal; }

std::string preemption_description() {
  if (g_signal == 0) return "";
  const int sig = g_signal;
  const char* name = sig == SIGTERM   ? "SIGTERM"
                     : sig == SIGINT  ? "SIGINT"
                     : sig == SIGUSR1 ? "SIGUSR1"
                     : sig == SIGUSR2 ? "SIGUSR2"
                                      : "signal";
  const std::time_t when = g_when;
  char at[32] = "?";
  std::tm tm{};
  if (localtime_r(&when, &tm)) std::strftime(at, sizeof at, "%H:%M:%S", &tm);
  return std::string(name) + " at " + at;
}

}  // namespace dtrainer::train
