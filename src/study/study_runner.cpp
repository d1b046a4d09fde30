#include "dtrainer/study/study_runner.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "child_process.h"
#include "dtrainer/core/dir_lock.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/format_duration.h"
#include "dtrainer/study/study_status.h"

namespace fs = std::filesystem;

namespace dtrainer::study {
namespace {

volatile sig_atomic_t g_signal = 0;
volatile sig_atomic_t g_signals = 0;
extern "C" void on_signal(int s) {
  g_signal = s;
  g_signals = g_signals + 1;
}

// Installs the handlers for the life of the object and puts the previous ones back.
class SignalForwarding {
 public:
  SignalForwarding() {
    g_signal = 0;
    g_signals = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &sa, &old_[i]);
  }
  ~SignalForwarding() {
    for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &old_[i], nullptr);
  }

 private:
  static constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction old_[3];
};

std::string now_text() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// The first line where two texts differ, for the changed-configuration error.
std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream ia(a), ib(b);
  std::string la, lb;
  for (int line = 1;; ++line) {
    const bool ga = static_cast<bool>(std::getline(ia, la)), gb = static_cast<bool>(std::getline(ib, lb));
    if (!ga && !gb) return "";
    if (!ga || !gb || la != lb)
      return "line " + std::to_string(line) + ": was '" + (ga ? la : "") + "', now '" + (gb ? lb : "") + "'";
  }
}

std::string plan_text(const StudyPlan& plan) { return describe_study_plan(plan); }

fs::path config_path(const StudyPlan& plan, const PlannedRun& r) {
  return plan.study.dir / "configs" / (r.name + ".toml");
}

void append_command(const StudyPlan& plan, const std::string& what, const std::vector<std::string>& argv) {
  append_to_file(plan.study.dir / "commands.sh", "# " + now_text() + " " + what + "\n" + shell_line(argv) + "\n", true);
}

std::string tail_lines(const fs::path& file, int lines) {
  std::ifstream in(file);
  std::vector<std::string> all;
  std::string l;
  while (std::getline(in, l)) all.push_back(l);
  std::string out;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0; i < all.size(); ++i)
    out += "    | " + all[i] + "\n";
  return out;
}

}  // namespace

std::string source_commit() {
  std::string head;
  if (run_captured({"git", "rev-parse", "HEAD"}, &head) != 0 || head.empty()) return "unknown";
  while (!head.empty() && (head.back() == '\n' || head.back() == '\r')) head.pop_back();
  std::string changes;
  run_captured({"git", "status", "--porcelain", "--untracked-files=no"}, &changes);
  return changes.empty() ? head : head + "+dirty";
}

void prepare_study_directory(const StudyPlan& plan) {
  const fs::path& dir = plan.study.dir;
  std::error_code ec;
  fs::create_directories(dir / "configs", ec);
  fs::create_directories(dir / "logs", ec);
  if (!fs::is_directory(dir / "configs", ec)) throw Error(dir.string(), "cannot create the study directory");
  for (const PlannedRun& r : plan.runs) {
    const fs::path cfg = config_path(plan, r);
    if (fs::exists(cfg, ec)) {
      const std::string old = read_file(cfg);
      if (old != r.job_toml && fs::exists(r.run_dir, ec))
        throw Error(plan.study.file.string() + ": run '" + r.name + "'",
                    "its job file changed since it started (" + cfg.string() + ", " +
                        first_difference(old, r.job_toml) +
                        "); a study's runs change only in a new study directory (dir = ...), or remove " +
                        r.run_dir.string() + " to train it again");
    }
  }
  for (const PlannedRun& r : plan.runs) write_file_atomic(config_path(plan, r), r.job_toml);
  write_file_atomic(dir / "study.toml", plan.study.text);
  write_file_atomic(dir / "plan.txt", plan_text(plan));
  write_file_atomic(dir / "plan.json", study_plan_json(plan).dump(2) + "\n");
  const char* user = std::getenv("USER");
  nlohmann::json prov = {{"study", plan.study.name},
                         {"study_file", fs::absolute(plan.study.file).string()},
                         {"base_job", plan.study.job.empty() ? "" : fs::absolute(plan.study.job).string()},
                         {"commit", source_commit()},
                         {"host", host_name()},
                         {"user", user ? user : ""},
                         {"working_directory", fs::current_path().string()},
                         {"prepared_at", now_text()}};
  write_file_atomic(dir / "provenance.json", prov.dump(2) + "\n");
}

RunStatus run_status(const fs::path& run_dir, int64_t steps) {
  std::error_code ec;
  if (fs::exists(run_dir / "DONE", ec)) {
    const std::string t = read_file(run_dir / "DONE");
    long long s = -1;
    if (std::sscanf(t.c_str(), "step %lld", &s) == 1 && s >= steps) return RunStatus::kComplete;
    return RunStatus::kPartial;  // (complete at fewer steps: the budget grew)
  }
  if (fs::exists(run_dir / "PREEMPTED", ec)) return RunStatus::kPreempted;
  if (fs::exists(run_dir / "ckpt", ec) || fs::exists(run_dir / "metrics.jsonl", ec)) return RunStatus::kPartial;
  return RunStatus::kNotStarted;
}

int run_study_locally(const StudyPlan& plan, const LocalLaunch& launch, std::ostream& out) {
  const Study& s = plan.study;
  prepare_study_directory(plan);
  const DirectoryLock lock(s.dir, "dtstudy run " + s.file.string());
  const SignalForwarding forwarding;
  // Open MPI's own teardown grace is kept (slurm/launch.sh raises it to 120 s for Slurm's SIGTERM): a stop is passed
  // on as SIGUSR1, which mpirun forwards without tearing the job down, and a longer odls_base_sigkill_timeout would
  // keep mpirun waiting that long after a failed run's ranks have all exited.
  std::vector<std::string> failed;
  const size_t total = plan.runs.size();
  for (size_t i = 0; i < total; ++i) {
    const PlannedRun& r = plan.runs[i];
    const std::string tag = "[" + std::to_string(i + 1) + "/" + std::to_string(total) + "] " + r.name;
    const RunStatus before = run_status(r.run_dir, r.steps);
    if (before == RunStatus::kComplete) {
      out << tag << ": complete (" << r.steps << " steps), not run again\n" << std::flush;
      continue;
    }
    std::vector<std::string> argv = {launch.mpirun, "-n", std::to_string(s.ranks)};
    if (geteuid() == 0) argv.push_back("--allow-run-as-root");
    if (static_cast<unsigned>(s.ranks) > std::thread::hardware_concurrency()) argv.push_back("--oversubscribe");
    argv.insert(argv.end(), {"--bind-to", "none"});
    argv.insert(argv.end(), launch.mpirun_args.begin(), launch.mpirun_args.end());
    argv.insert(argv.end(), {launch.dtrainer.string(), "--config", config_path(plan, r).string(), "--resume", "auto"});
    const fs::path log = s.dir / "logs" / (r.name + ".log");
    append_command(plan, "run " + r.name, argv);
    append_to_file(log, "\n# " + now_text() + " dtstudy: " + shell_line(argv) + "\n");
    out << tag << ": " << (before == RunStatus::kNotStarted ? "training " : "resuming, ") << r.steps << " steps"
        << (r.est_seconds > 0 ? " (est. " + format_duration(r.est_seconds) + ")" : "") << "; log " << log.string()
        << "\n"
        << std::flush;
    const std::string started = now_text();
    const double t0 = seconds_now();
    // (dtstudy killed outright: mpirun gets SIGUSR1 and the trainer checkpoints, instead of an orphan
    // training on that nobody watches)
    const int pid = start_logged(argv, log.string(), SIGUSR1);
    int rc = -1, forwarded = 0;
    double last_line = t0;
    int64_t last_step = -1;
    while ((rc = poll_child(pid)) < 0) {
      if (g_signals > forwarded) {
        forwarded = g_signals;
        if (forwarded == 1) {
          out << tag << ": signal " << g_signal
              << ": passed to the trainer, which checkpoints at its next step and stops (a second signal kills it)\n"
              << std::flush;
          // SIGUSR1, the trainer's other preemption signal: mpirun forwards it to every rank and keeps
          // running until they exit (a SIGTERM would make mpirun tear the job down itself).
          signal_group(pid, SIGUSR1);
        } else {
          signal_group(pid, SIGKILL);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      if (seconds_now() - last_line >= 30) {
        const RunProgress p = read_run_progress(r.run_dir);
        if (p.step != last_step) {
          out << tag << ": step " << p.step << "/" << r.steps << describe_progress(p) << " ("
              << format_duration(seconds_now() - t0) << ")\n"
              << std::flush;
          last_step = p.step;
        }
        last_line = seconds_now();
      }
    }
    const double wall = seconds_now() - t0;
    const RunStatus after = run_status(r.run_dir, r.steps);
    const RunProgress p = read_run_progress(r.run_dir);
    const char* state = after == RunStatus::kComplete    ? "complete"
                        : after == RunStatus::kPreempted ? "preempted"
                        : g_signals > 0                  ? "interrupted"
                                                         : "failed";
    nlohmann::json record = {{"run", r.name},      {"command", shell_line(argv)},
                             {"started", started}, {"ended", now_text()},
                             {"wall_s", wall},     {"exit", rc},
                             {"state", state},     {"step", p.step}};
    append_to_file(s.dir / "launches.jsonl", record.dump() + "\n", true);
    if (after == RunStatus::kComplete) {
      out << tag << ": complete in " << format_duration(wall) << describe_progress(p) << "\n" << std::flush;
      continue;
    }
    if (g_signals > 0) {
      out << tag << ": stopped at step " << p.step << " (" << state
          << "); the study is interrupted: rerun `dtstudy run " << s.file.string()
          << "` to continue (complete runs are not run again, this one resumes from its newest checkpoint)\n"
          << std::flush;
      return 128 + (g_signal ? g_signal : SIGTERM);
    }
    out << tag << ": FAILED (exit " << rc << ", step " << p.step << " of " << r.steps << "); the last lines of "
        << log.string() << ":\n"
        << tail_lines(log, 8) << std::flush;
    failed.push_back(r.name);
  }
  if (!failed.empty()) {
    std::string names;
    for (const auto& n : failed) names += (names.empty() ? "" : ", ") + n;
    out << "study " << s.name << ": " << failed.size() << " of " << total << " runs failed (" << names
        << "); fix the cause and rerun `dtstudy run " << s.file.string() << "` (complete runs are kept)\n";
    return 1;
  }
  out << "study " << s.name << ": all " << total << " runs complete; `dtstudy report " << s.dir.string()
      << "` fits and plots them\n";
  return 0;
}

int submit_study_to_slurm(const StudyPlan& plan, const SlurmLaunch& launch, std::ostream& out) {
  const Study& s = plan.study;
  std::error_code ec;
  const fs::path sweep = launch.scripts / "sweep.sh";
  if (!fs::is_regular_file(sweep, ec) || !fs::is_regular_file(launch.scripts / "launch.sh", ec))
    throw Error(launch.scripts.string(),
                "no sweep.sh and launch.sh here (run dtstudy from the dtrainer checkout, or "
                "give --slurm-scripts DIR)");
  prepare_study_directory(plan);
  const DirectoryLock lock(s.dir, "dtstudy run --launcher slurm " + s.file.string());
  std::vector<const PlannedRun*> todo;
  for (const PlannedRun& r : plan.runs)
    if (run_status(r.run_dir, r.steps) != RunStatus::kComplete) todo.push_back(&r);
  const fs::path root = fs::current_path();
  const fs::path logs = fs::absolute(s.dir / "logs");
  auto submit = [&](std::vector<std::string> argv, const std::string& what) {
    append_command(plan, what, argv);
    std::string text;
    const int rc = run_captured(argv, &text, true);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    if (rc != 0) throw Error("sbatch", what + " was refused (exit " + std::to_string(rc) + "): " + text);
    const std::string id = text.substr(0, text.find(';'));  // (--parsable: "ID" or "ID;cluster")
    if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
      throw Error("sbatch", what + ": unexpected reply '" + text + "' (wanted a job id)");
    return id;
  };
  const int per_node = std::min(s.ranks, s.ranks_per_node);
  const int nodes = (s.ranks + per_node - 1) / per_node;
  const std::string exports =
      "--export=ALL,DTRAINER_ROOT=" + root.string() + ",DTRAINER_BIN=" + fs::absolute(launch.dtrainer).string();
  std::string array_id;
  nlohmann::json record = {{"submitted_at", now_text()}, {"runs", nlohmann::json::array()}};
  if (!todo.empty()) {
    std::vector<std::string> argv = {launch.sbatch,
                                     "--parsable",
                                     "--array=0-" + std::to_string(todo.size() - 1),
                                     "--job-name=dtstudy-" + s.name,
                                     "--nodes=" + std::to_string(nodes),
                                     "--ntasks-per-node=" + std::to_string(per_node),
                                     "--output=" + (logs / "slurm-%A_%a.out").string(),
                                     exports};
    if (s.threads > 0) argv.push_back("--cpus-per-task=" + std::to_string(s.threads));
    argv.insert(argv.end(), launch.sbatch_args.begin(), launch.sbatch_args.end());
    argv.push_back(sweep.string());
    for (const PlannedRun* r : todo) {
      argv.push_back(fs::absolute(config_path(plan, *r)).string());
      record["runs"].push_back(r->name);
    }
    array_id = submit(argv, "array job of " + std::to_string(todo.size()) + " runs");
    record["array_job"] = array_id;
    out << "submitted array job " << array_id << ": " << todo.size() << " run" << (todo.size() > 1 ? "s" : "") << " of "
        << plan.runs.size() << " (" << nodes << " node" << (nodes > 1 ? "s" : "") << " x " << per_node
        << (per_node > 1 ? " ranks" : " rank") << " each); logs " << (logs / ("slurm-" + array_id + "_*.out")).string()
        << "\n";
  } else {
    out << "every run is complete: no array job\n";
  }
  std::vector<std::string> argv = {launch.sbatch, "--parsable", "--job-name=dtstudy-" + s.name + "-report",
                                   "--nodes=1",   "--ntasks=1", "--output=" + (logs / "slurm-report-%j.out").string()};
  if (!array_id.empty()) argv.push_back("--dependency=afterok:" + array_id);
  argv.insert(argv.end(), launch.sbatch_args.begin(), launch.sbatch_args.end());
  argv.push_back("--chdir=" + root.string());
  argv.push_back("--wrap=" +
                 shell_line({fs::absolute(launch.dtstudy).string(), "report", fs::absolute(s.dir).string()}));
  const std::string report_id = submit(argv, "report job");
  record["report_job"] = report_id;
  write_file_atomic(s.dir / "slurm.json", record.dump(2) + "\n");
  out << "submitted report job " << report_id
      << (array_id.empty() ? "" : " (after array job " + array_id + " succeeds: --dependency=afterok)")
      << "; it writes " << (s.dir / "report.md").string() << "\n"
      << "follow it with `dtstudy status " << s.dir.string() << "` or squeue\n";
  return 0;
}

}  // namespace dtrainer::study
