#include "dtrainer/analysis/loglog_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "dtrainer/core/error.h"
#include "dtrainer/core/file_io.h"
#include "dtrainer/core/temp_files.h"

#include <cairo.h>
#include <librsvg/rsvg.h>

namespace dtrainer::analysis {

LogLogPlot::LogLogPlot(std::string title, std::string x_label, std::string y_label)
    : title_(std::move(title)), x_label_(std::move(x_label)), y_label_(std::move(y_label)) {}

void LogLogPlot::points(const std::vector<double>& x, const std::vector<double>& y, const std::string& color, double r,
                        const std::string& label) {
  series_.push_back({Series::kPoints, x, y, {}, color, label, r});
}
void LogLogPlot::line(const std::vector<double>& x, const std::vector<double>& y, const std::string& color, double w,
                      const std::string& label) {
  series_.push_back({Series::kLine, x, y, {}, color, label, w});
}
void LogLogPlot::band(const std::vector<double>& x, const std::vector<double>& lo, const std::vector<double>& hi,
                      const std::string& color, const std::string& label) {
  series_.push_back({Series::kBand, x, lo, hi, color, label, 0});
}

namespace {
std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
  return o;
}
std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}
std::string tick_label(double decade) {
  const int e = static_cast<int>(std::lround(decade));
  if (e >= -2 && e <= 3) {
    char b[16];
    std::snprintf(b, sizeof b, "%g", std::pow(10.0, e));
    return b;
  }
  return "1e" + std::to_string(e);
}
}  // namespace

std::string LogLogPlot::svg() const {
  const std::string path = "--plot";
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const auto& s : series_)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!(s.x[i] > 0)) continue;
      xmin = std::min(xmin, std::log10(s.x[i]));
      xmax = std::max(xmax, std::log10(s.x[i]));
      for (double v : {s.y[i], s.kind == Series::kBand ? s.y2[i] : s.y[i]})
        if (v > 0) ymin = std::min(ymin, std::log10(v)), ymax = std::max(ymax, std::log10(v));
    }
  if (!std::isfinite(xmin) || !std::isfinite(ymin)) throw Error(path, "nothing positive to plot on log axes");
  const double padx = std::max(0.05 * (xmax - xmin), 0.05), pady = std::max(0.08 * (ymax - ymin), 0.01);
  xmin -= padx, xmax += padx, ymin -= pady, ymax += pady;
  const double W = 760, H = 520, L = 90, R = 220, T = 50, B = 70;  // right margin holds the legend
  auto px = [&](double x) { return L + (std::log10(x) - xmin) / (xmax - xmin) * (W - L - R); };
  auto py = [&](double y) { return H - B - (std::log10(y) - ymin) / (ymax - ymin) * (H - T - B); };
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << num((W - R + L) / 2) << "\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">" << esc(title_)
    << "</text>\n";
  o << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  // Decade ticks (and minor ticks) on both axes.
  auto ticks = [&](double lo, double hi, bool is_x) {
    const double span = hi - lo;
    const int step = span > 12 ? 2 : 1;
    for (int d = static_cast<int>(std::floor(lo)); d <= static_cast<int>(std::ceil(hi)); ++d)
      for (int m = 1; m <= 9; ++m) {
        const double v = d + std::log10(m);
        if (v < lo || v > hi) continue;
        const bool major = m == 1 && d % step == 0;
        if (is_x) {
          const double X = px(std::pow(10, v));
          o << "<line x1=\"" << num(X) << "\" y1=\"" << H - B << "\" x2=\"" << num(X) << "\" y2=\""
            << H - B + (major ? 6 : 3) << "\" stroke=\"black\"/>\n";
          if (major) {
            o << "<line x1=\"" << num(X) << "\" y1=\"" << T << "\" x2=\"" << num(X) << "\" y2=\"" << H - B
              << "\" stroke=\"#ddd\"/>\n";
            o << "<text x=\"" << num(X) << "\" y=\"" << H - B + 20 << "\" text-anchor=\"middle\">" << tick_label(d)
              << "</text>\n";
          }
        } else {
          const double Y = py(std::pow(10, v));
          o << "<line x1=\"" << L - (major || span < 1.2 ? 6 : 3) << "\" y1=\"" << num(Y) << "\" x2=\"" << L
            << "\" y2=\"" << num(Y) << "\" stroke=\"black\"/>\n";
          if (major || span < 1.2) {  // short ranges label every minor tick
            char b[32];
            std::snprintf(b, sizeof b, "%g", std::pow(10.0, v));
            o << "<text x=\"" << L - 9 << "\" y=\"" << num(Y + 4) << "\" text-anchor=\"end\">"
              << (major ? tick_label(d) : b) << "</text>\n";
          }
        }
      }
  };
  ticks(xmin, xmax, true);
  ticks(ymin, ymax, false);
  o << "<text x=\"" << num((W - R + L) / 2) << "\" y=\"" << H - 22 << "\" text-anchor=\"middle\" font-size=\"13\">"
    << esc(x_label_) << "</text>\n";
  o << "<text transform=\"translate(24," << num((H - B + T) / 2)
    << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">" << esc(y_label_) << "</text>\n";
  o << "<g clip-path=\"none\">\n";
  for (const auto& s : series_) {
    if (s.kind == Series::kBand) {
      o << "<polygon fill=\"" << s.color << "\" fill-opacity=\"0.25\" stroke=\"none\" points=\"";
      for (size_t i = 0; i < s.x.size(); ++i) o << num(px(s.x[i])) << "," << num(py(s.y2[i])) << " ";
      for (size_t i = s.x.size(); i-- > 0;) o << num(px(s.x[i])) << "," << num(py(s.y[i])) << " ";
      o << "\"/>\n";
    } else if (s.kind == Series::kLine) {
      o << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"" << s.size << "\" points=\"";
      for (size_t i = 0; i < s.x.size(); ++i) o << num(px(s.x[i])) << "," << num(py(s.y[i])) << " ";
      o << "\"/>\n";
    } else {
      for (size_t i = 0; i < s.x.size(); ++i)
        o << "<circle cx=\"" << num(px(s.x[i])) << "\" cy=\"" << num(py(s.y[i])) << "\" r=\"" << s.size << "\" fill=\""
          << s.color << "\"/>\n";
    }
  }
  o << "</g>\n";
  double ly = T + 10;
  for (const auto& s : series_) {
    if (s.label.empty()) continue;
    const double lx = W - R + 15;
    if (s.kind == Series::kPoints)
      o << "<circle cx=\"" << lx + 10 << "\" cy=\"" << ly << "\" r=\"4\" fill=\"" << s.color << "\"/>\n";
    else if (s.kind == Series::kLine)
      o << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 20 << "\" y2=\"" << ly << "\" stroke=\""
        << s.color << "\" stroke-width=\"2\"/>\n";
    else
      o << "<rect x=\"" << lx << "\" y=\"" << ly - 6 << "\" width=\"20\" height=\"12\" fill=\"" << s.color
        << "\" fill-opacity=\"0.25\"/>\n";
    o << "<text x=\"" << lx + 28 << "\" y=\"" << ly + 4 << "\">" << esc(s.label) << "</text>\n";
    ly += 20;
  }
  o << "</svg>\n";
  return o.str();
}

void LogLogPlot::write(const std::string& path) const {
  auto ends_with = [&](const char* ext) { return path.size() > 4 && path.compare(path.size() - 4, 4, ext) == 0; };
  const bool png = ends_with(".png");
  if (!png && !ends_with(".svg"))
    throw Error(path, "plots are written as .svg or .png: give a file name with one of those endings");
  const std::string text = svg();
  const std::string tmp = temporary_path(path).string();
  const TempFileGuard guard(tmp);
  if (png) {
    GError* err = nullptr;
    RsvgHandle* h = rsvg_handle_new_from_data(reinterpret_cast<const guint8*>(text.data()), text.size(), &err);
    if (!h) throw Error(path, std::string("cannot render the plot: ") + (err ? err->message : "librsvg failed"));
    double w = 0, hgt = 0;
    rsvg_handle_get_intrinsic_size_in_pixels(h, &w, &hgt);
    cairo_surface_t* surface =
        cairo_image_surface_create(CAIRO_FORMAT_ARGB32, static_cast<int>(w), static_cast<int>(hgt));
    cairo_t* cr = cairo_create(surface);
    const RsvgRectangle viewport{0, 0, w, hgt};
    const bool ok = rsvg_handle_render_document(h, cr, &viewport, &err);
    const cairo_status_t st = ok ? cairo_surface_write_to_png(surface, tmp.c_str()) : CAIRO_STATUS_WRITE_ERROR;
    cairo_destroy(cr);
    cairo_surface_destroy(surface);
    g_object_unref(h);
    if (!ok || st != CAIRO_STATUS_SUCCESS) {
      std::remove(tmp.c_str());
      throw Error(path, "cannot write the PNG");
    }
    publish_file(tmp, path);
    guard.release();
  } else {
    write_file_atomic(path, text);
  }
}

}  // namespace dtrainer::analysis
