#pragma once
// The watchdog: no rank waits forever. The training loop marks its phases (data, step, eval,
// sample, checkpoint, ...); a thread on every rank watches the current one, and when it has run
// far longer than it usually does — more than `factor` x the median of its recent durations and
// more than `min_s`, or more than `timeout_s` at all — the job ends with a message naming the step,
// the phase and the ranks that did not arrive. That is what NCCL's watchdog gives GPU jobs, here
// for every backend and for the phases around the collectives too (a rank stalled in its loader,
// a rank stopped with SIGSTOP, a collective write that never returns).
//
// How the ranks are named: each watchdog thread answers rank 0's questions on a communicator of
// its own (MPI_THREAD_MULTIPLE). When a rank's limit is passed, rank 0 asks every rank where it
// is (step, phase, and how many collectives it has issued); a rank that has issued fewer
// collectives than the others, or is in another step, did not arrive; a rank that does not answer
// within `survey_s` is stopped or hung outside MPI. Rank 0 prints the survey and aborts the job
// (MPI_Abort); any other rank whose limit has passed waits `survey_s` + 10 s for rank 0 to do so,
// then ends the job itself with what it knows (rank 0 may be the stalled one). Without
// MPI_THREAD_MULTIPLE the survey is skipped and each rank reports only itself.
//
// Cost: one posted receive per rank, tested every 100 ms by the watchdog thread; nothing on the
// training thread but a mutex-protected store at each phase change.

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dtrainer::parallel {

struct WatchdogConfig {
  double timeout_s = 1800;  // a phase running longer than this always ends the job; 0: no watchdog
  double factor = 20;       // ...and one running longer than factor x its recent median...
  double min_s = 120;       // ...and longer than this (0 factor: the absolute bound only)
  double survey_s = 5;      // how long rank 0 waits for the other ranks' answers
  int history = 20;         // durations per phase the median is taken over (the first 3 use timeout_s)
};

// Collective operations this process has issued (every backend's, the agreements, the trainer's
// own reductions): ranks that reach the same point of a run have issued the same number, so a
// rank with fewer than the others when the watchdog fires is one that did not arrive.
std::atomic<int64_t>& collectives_issued();
inline void note_collective() { collectives_issued().fetch_add(1, std::memory_order_relaxed); }

// The time a phase may run: timeout_s when fewer than 3 durations are known, else
// min(timeout_s, max(min_s, factor x median(recent))). Infinity when the watchdog is off.
double watchdog_limit(const WatchdogConfig& config, const std::vector<double>& recent);

class Watchdog {
 public:
  // Collective over `comm` (duplicates it). thread_multiple: MPI runs with MPI_THREAD_MULTIPLE.
  Watchdog(MPI_Comm comm, const WatchdogConfig& config, bool thread_multiple);
  ~Watchdog();  // stops the thread (not collective)
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // The training thread enters a phase of a step (name: a short literal, e.g. "checkpoint"),
  // and leaves it; its duration joins the phase's history.
  void enter(const char* phase, int64_t step);
  void leave();

  // RAII: enter in the constructor, leave in the destructor.
  class Phase {
   public:
    Phase(Watchdog* w, const char* phase, int64_t step) : w_(w) {
      if (w_) w_->enter(phase, step);
    }
    ~Phase() {
      if (w_) w_->leave();
    }
    Phase(const Phase&) = delete;
    Phase& operator=(const Phase&) = delete;

   private:
    Watchdog* w_;
  };

 private:
  using Clock = std::chrono::steady_clock;
  struct State {
    bool active = false;
    char phase[32] = {0};
    int64_t step = 0;
    Clock::time_point since{};
    double limit_s = 0;
    std::string limit_why;
  };
  struct Answer {  // what a rank tells rank 0's survey
    int64_t step = 0;
    int64_t elapsed_ms = 0;
    int64_t collectives = 0;
    int32_t active = 0;
    char phase[32] = {0};
  };
  void run();
  void answer(const State& s);
  void answer_of_mine(const State& s, Answer& a) const;
  void fire(const State& s, double elapsed);
  std::string survey(const State& s, double elapsed);

  WatchdogConfig config_;
  bool multiple_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, world_ = 1;
  std::mutex mutex_;
  std::condition_variable cv_;
  State state_;
  std::map<std::string, std::deque<double>> history_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace dtrainer::parallel
