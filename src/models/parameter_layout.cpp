#include "dtrainer/models/parameter_layout.h"

#include <unordered_map>

#include <torch/nn/module.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/unit_runner.h"

namespace dtrainer::models {

int64_t TensorLayout::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<UnitLayout> parameter_layout(torch::nn::Module& module, UnitModel& units) {
  std::unordered_map<const void*, std::string> names;  // tensor identity -> parameter name
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    names[item.value().unsafeGetTensorImpl()] = item.key();
  std::vector<UnitLayout> out;
  for (const ModelUnit& u : units.units()) {
    UnitLayout l{u.name, {}, 0};
    for (const torch::Tensor& p : u.parameters) {
      const auto it = names.find(p.unsafeGetTensorImpl());
      if (it == names.end())
        throw Error("parameter_layout", "unit " + u.name + " has a parameter the module does not name");
      l.tensors.push_back({it->second, p.sizes().vec(), l.numel});
      l.numel += p.numel();
    }
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace dtrainer::models
