#include "dtrainer/models/unit_runner.h"

namespace dtrainer::models {

size_t UnitModel::register_unit(std::string name, std::vector<std::shared_ptr<torch::nn::Module>> modules) {
  registered_.emplace_back(std::move(name), std::move(modules));
  return registered_.size() - 1;
}

std::vector<ModelUnit> UnitModel::units() const {
  std::vector<ModelUnit> out;
  for (const auto& [name, modules] : registered_) {
    ModelUnit u{name, {}};
    for (const auto& m : modules)
      for (const auto& p : m->parameters()) u.parameters.push_back(p);
    out.push_back(std::move(u));
  }
  return out;
}

}  // namespace dtrainer::models
