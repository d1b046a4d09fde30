#pragma once
// A small log-log plot written as SVG: scatter series, lines, a shaded band, decade ticks,
// labelled axes and a legend. Enough for scaling-law figures without a plotting dependency.

#include <string>
#include <vector>

namespace dtrainer::analysis {

class LogLogPlot {
 public:
  LogLogPlot(std::string title, std::string x_label, std::string y_label);
  void points(const std::vector<double>& x, const std::vector<double>& y, const std::string& color, double radius,
              const std::string& label);
  void line(const std::vector<double>& x, const std::vector<double>& y, const std::string& color, double width,
            const std::string& label);
  void band(const std::vector<double>& x, const std::vector<double>& lo, const std::vector<double>& hi,
            const std::string& color, const std::string& label);
  // Writes the plot atomically as SVG (path ends in .svg) or PNG (.png, the same SVG rendered by
  // librsvg); throws Error(path) for other endings or when it cannot write.
  void write(const std::string& path) const;
  std::string svg() const;

 private:
  struct Series {
    enum Kind { kPoints, kLine, kBand } kind;
    std::vector<double> x, y, y2;
    std::string color, label;
    double size;
  };
  std::string title_, x_label_, y_label_;
  std::vector<Series> series_;
};

}  // namespace dtrainer::analysis
