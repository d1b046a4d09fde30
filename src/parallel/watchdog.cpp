#include "dtrainer/parallel/watchdog.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

namespace dtrainer::parallel {
namespace {

constexpr int kAskTag = 71, kAnswerTag = 72;
constexpr double kPeerGraceS = 10;  // a rank other than 0 waits survey_s + this for rank 0 to end the job

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10 ? "%.2f s" : "%.0f s", s);
  return buf;
}

// "1, 4, 7" (at most 16, then "and N more").
std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size() && i < 16; ++i) out += (i ? ", " : "") + std::to_string(ranks[i]);
  if (ranks.size() > 16) out += " and " + std::to_string(ranks.size() - 16) + " more";
  return out;
}

}  // namespace

std::atomic<int64_t>& collectives_issued() {
  static std::atomic<int64_t> n{0};
  return n;
}

double watchdog_limit(const WatchdogConfig& c, const std::vector<double>& recent) {
  if (c.timeout_s <= 0) return std::numeric_limits<double>::infinity();
  if (recent.size() < 3 || c.factor <= 0) return c.timeout_s;
  std::vector<double> v = recent;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  const double median = v[v.size() / 2];
  return std::min(c.timeout_s, std::max(c.min_s, c.factor * median));
}

Watchdog::Watchdog(MPI_Comm comm, const WatchdogConfig& config, bool thread_multiple)
    : config_(config), multiple_(thread_multiple) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &world_);
  if (config_.timeout_s <= 0) return;
  if (multiple_) MPI_Comm_dup(comm, &comm_);
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void Watchdog::enter(const char* phase, int64_t step) {
  std::lock_guard<std::mutex> lock(mutex_);
  State& s = state_;
  s.active = true;
  std::snprintf(s.phase, sizeof s.phase, "%s", phase);
  s.step = step;
  s.since = Clock::now();
  const auto& h = history_[phase];
  const std::vector<double> recent(h.begin(), h.end());
  s.limit_s = watchdog_limit(config_, recent);
  if (recent.size() < 3 || config_.factor <= 0 || s.limit_s >= config_.timeout_s) {
    s.limit_why = "watchdog_timeout";
  } else {
    std::vector<double> v = recent;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    char buf[160];
    std::snprintf(buf, sizeof buf, "watchdog_factor %g x the recent median %s, at least watchdog_min %s",
                  config_.factor, seconds(v[v.size() / 2]).c_str(), seconds(config_.min_s).c_str());
    s.limit_why = buf;
  }
}

void Watchdog::leave() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!state_.active) return;
  state_.active = false;
  auto& h = history_[state_.phase];
  h.push_back(std::chrono::duration<double>(Clock::now() - state_.since).count());
  while (static_cast<int>(h.size()) > std::max(3, config_.history)) h.pop_front();
}

void Watchdog::answer(const State& s) {
  Watchdog::Answer a;
  answer_of_mine(s, a);
  MPI_Send(&a, sizeof a, MPI_BYTE, 0, kAnswerTag, comm_);
}

std::string Watchdog::survey(const State& mine, double elapsed) {
  std::vector<MPI_Request> asks(static_cast<size_t>(world_), MPI_REQUEST_NULL);
  int token = 1;
  for (int r = 1; r < world_; ++r) MPI_Isend(&token, 1, MPI_INT, r, kAskTag, comm_, &asks[r]);
  std::vector<bool> got(static_cast<size_t>(world_), false);
  std::vector<Watchdog::Answer> answers(static_cast<size_t>(world_));
  answer_of_mine(mine, answers[0]);
  got[0] = true;
  int missing = world_ - 1;
  const auto deadline = Clock::now() + std::chrono::duration<double>(config_.survey_s);
  while (missing > 0 && Clock::now() < deadline) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, kAnswerTag, comm_, &flag, &st);
    if (!flag) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    Watchdog::Answer a;
    MPI_Recv(&a, sizeof a, MPI_BYTE, st.MPI_SOURCE, kAnswerTag, comm_, MPI_STATUS_IGNORE);
    if (!got[st.MPI_SOURCE]) --missing;
    got[st.MPI_SOURCE] = true;
    answers[st.MPI_SOURCE] = a;
  }
  (void)elapsed;
  // The furthest point any answering rank reached: its step and its count of collectives.
  int64_t max_step = 0, max_coll = 0;
  for (int r = 0; r < world_; ++r)
    if (got[r]) max_step = std::max(max_step, answers[r].step), max_coll = std::max(max_coll, answers[r].collectives);
  std::vector<int> silent, waiting;
  std::string behind;
  for (int r = 0; r < world_; ++r) {
    if (!got[r]) {
      silent.push_back(r);
      continue;
    }
    Watchdog::Answer& a = answers[r];
    a.phase[sizeof a.phase - 1] = '\0';
    if (a.step == max_step && a.collectives == max_coll) {
      waiting.push_back(r);
      continue;
    }
    behind += (behind.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) +
              (a.active ? " (in step " + std::to_string(a.step) + " phase '" + a.phase + "' for " +
                              seconds(a.elapsed_ms / 1e3)
                        : " (between phases after step " + std::to_string(a.step)) +
              ", " + std::to_string(a.collectives) + " collectives issued where the others reached " +
              std::to_string(max_coll) + ")";
  }
  std::string out;
  if (!silent.empty())
    out += " Did not arrive: rank" + std::string(silent.size() > 1 ? "s " : " ") + rank_list(silent) +
           " (no answer within " + seconds(config_.survey_s) + ": stopped, or hung outside MPI)" +
           (behind.empty() ? "." : ";");
  if (!behind.empty()) out += (silent.empty() ? " Did not arrive: " : " ") + behind + ".";
  if (silent.empty() && behind.empty())
    out += " Every rank reached the same point (a collective, or a file system, that does not return).";
  if (!waiting.empty())
    out += " Waiting there: rank" + std::string(waiting.size() > 1 ? "s " : " ") + rank_list(waiting) + ".";
  return out;
}

void Watchdog::answer_of_mine(const State& s, Answer& a) const {
  a.step = s.step;
  a.active = s.active ? 1 : 0;
  a.elapsed_ms = s.active ? std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - s.since).count() : 0;
  a.collectives = collectives_issued().load(std::memory_order_relaxed);
  std::memcpy(a.phase, s.phase, sizeof a.phase);
}

void Watchdog::fire(const State& s, double elapsed) {
  std::string msg = "rank " + std::to_string(rank_) + ": watchdog: step " + std::to_string(s.step) + ", phase '" +
                    s.phase + "' has run " + seconds(elapsed) + " (limit " + seconds(s.limit_s) + ": " + s.limit_why +
                    ").";
  if (multiple_ && rank_ == 0 && world_ > 1)
    msg += survey(s, elapsed);
  else if (world_ > 1)
    msg += multiple_
               ? " Rank 0, which names the ranks that did not arrive, has not ended the job: it may be the one stalled."
               : " (MPI without MPI_THREAD_MULTIPLE: the other ranks are not surveyed.)";
  msg +=
      " Ending the job; it resumes from its last complete checkpoint (watchdog_timeout, watchdog_factor and "
      "watchdog_min "
      "set the bounds).\n";
  std::fputs(msg.c_str(), stderr);
  std::fflush(stderr);
  if (multiple_) MPI_Abort(MPI_COMM_WORLD, 3);
  std::_Exit(3);  // (MPI_Abort may not be called from this thread without MPI_THREAD_MULTIPLE; mpirun ends the job)
}

void Watchdog::run() {
  MPI_Request ask = MPI_REQUEST_NULL;
  int token = 0;
  if (multiple_ && rank_ != 0) MPI_Irecv(&token, 1, MPI_INT, 0, kAskTag, comm_, &ask);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stop_; })) {
    const State s = state_;
    lock.unlock();
    if (ask != MPI_REQUEST_NULL) {
      int flag = 0;
      MPI_Test(&ask, &flag, MPI_STATUS_IGNORE);
      if (flag) {
        answer(s);
        MPI_Irecv(&token, 1, MPI_INT, 0, kAskTag, comm_, &ask);
      }
    }
    if (s.active) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - s.since).count();
      const bool speaks_first = rank_ == 0 || !multiple_;
      if (elapsed > s.limit_s + (speaks_first ? 0 : config_.survey_s + kPeerGraceS)) fire(s, elapsed);
    }
    lock.lock();
  }
  lock.unlock();
  if (ask != MPI_REQUEST_NULL) {
    MPI_Cancel(&ask);
    MPI_Wait(&ask, MPI_STATUS_IGNORE);
  }
}

}  // namespace dtrainer::parallel
