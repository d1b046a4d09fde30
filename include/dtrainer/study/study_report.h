#pragma once
// A study's report (`dtstudy report STUDY_DIR`): every run's alignment and loss records collected,
// the laws the study names fitted with the fitlaws library — y = a x^b on the Pareto frontier of
// (x, y) over each family's runs and over all runs, with bootstrap intervals — and written as
//   STUDY_DIR/report.md      the runs, each fit's table, the plots
//   STUDY_DIR/report.json    the same numbers
//   STUDY_DIR/plots/FIT.svg  y against x per family: the points, the frontier, its fit
// Nothing in it depends on when or how fast the runs ran, so the same runs give the same report.

#include <filesystem>
#include <string>
#include <vector>

namespace dtrainer::study {

struct ReportOptions {
  bool png = false;  // plots also as PNG (librsvg)
};

// Returns what it left out and why (runs without records, fits with too few frontier points), one
// line each. Throws Error when the directory holds no study or no run has records yet.
std::vector<std::string> write_study_report(const std::filesystem::path& study_dir, const ReportOptions& options = {});

}  // namespace dtrainer::study
