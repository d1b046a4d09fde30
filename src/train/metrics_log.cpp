#include "dtrainer/train/metrics_log.h"

#include "dtrainer/core/metric_keys.h"

namespace dtrainer::train {
namespace {

void flatten(const std::string& prefix, const nlohmann::json& v, std::vector<std::pair<std::string, float>>& out) {
  if (v.is_number()) {
    out.emplace_back(prefix, v.get<float>());
  } else if (v.is_object()) {
    for (const auto& [k, x] : v.items()) flatten(prefix.empty() ? k : prefix + "/" + k, x, out);
  } else if (v.is_array() && v.size() == 2 && v[0].is_number() && v[1].is_number()) {  // an interval
    out.emplace_back(prefix + "/lo", v[0].get<float>());
    out.emplace_back(prefix + "/hi", v[1].get<float>());
  }
}

}  // namespace

std::vector<std::pair<std::string, float>> MetricsLog::scalars(const nlohmann::json& record) {
  std::vector<std::pair<std::string, float>> out;
  for (const auto& [k, v] : record.items())
    if (k != metric_keys::kStep) flatten(k, v, out);
  return out;
}

void MetricsLog::start(int64_t step) {
  dir_.truncate_metrics(step);
  if (writer_) tb_ = std::make_unique<TensorBoardWriter>((dir_.path() / "tb").string());
}

void MetricsLog::write(const nlohmann::json& record) {
  dir_.append_metrics(record);
  if (tb_) tb_->add_scalars(record.at(metric_keys::kStep).get<int64_t>(), scalars(record));
}

}  // namespace dtrainer::train
