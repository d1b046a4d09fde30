#include "dtrainer/ckpt/weights_file.h"

#include <map>
#include <set>

#include <torch/torch.h>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/parse.h"

namespace dtrainer::ckpt {

const NameTable<WeightsSource>& name_table(WeightsSource) {
  static const NameTable<WeightsSource> t{
      {"auto", WeightsSource::kAuto}, {"params", WeightsSource::kParams}, {"ema", WeightsSource::kEma}};
  return t;
}
WeightsSource parse_weights_source(const std::string& field, const std::string& text) {
  return name_table(WeightsSource{}).parse(field, text);
}

namespace {
// The dataset a weights source means in `ck`: params, or the first weight average the run kept
// (its EMA, or its first power-function profile: what the trainer sampled with).
std::string weights_kind(const CheckpointReader& ck, WeightsSource source) {
  const std::vector<std::string> averages = ck.averages();
  switch (source) {
    case WeightsSource::kParams: return "params";
    case WeightsSource::kAuto: return averages.empty() ? "params" : averages.front();
    case WeightsSource::kEma: break;
  }
  if (averages.empty())
    throw Error(ck.state_file(),
                "has no EMA weights (the run had ema_decay = 0 and no phema profiles); use the trained ones (params)");
  return averages.front();
}
}  // namespace

ExportSummary export_weights(const std::string& checkpoint_dir, const std::string& out, const ExportOptions& options) {
  if (options.dtype != torch::kFloat32 && options.dtype != torch::kBFloat16 && options.dtype != torch::kFloat16)
    throw Error("dtype", "weights are exported as F32, BF16 or F16");
  const CheckpointReader ck(checkpoint_dir);
  const std::vector<models::UnitLayout> layout = ck.layout();
  const std::string kind = weights_kind(ck, options.source);

  ExportSummary summary;
  summary.source = kind;
  summary.step = ck.step();
  std::vector<SafetensorsEntry> entries;
  for (const auto& u : layout)
    for (const auto& t : u.tensors) {
      entries.push_back({t.name, options.dtype, t.shape, 0, 0});
      summary.elements += t.numel();
    }
  std::map<std::string, std::string> metadata{{"format", "pt"},
                                              {"producer", "dtrainer"},
                                              {"checkpoint", checkpoint_dir},
                                              {"step", std::to_string(summary.step)},
                                              {"weights", kind}};
  if (ck.meta().contains("config_toml") && ck.meta()["config_toml"].is_string())
    metadata["config_toml"] = ck.meta()["config_toml"].get<std::string>();
  for (const char* key : {"latent_size", "resolution_scale"})  // (what a later stage reads: train/stage_transfer.h)
    if (ck.meta().contains(key) && ck.meta()[key].is_number()) metadata[key] = ck.meta()[key].dump();

  SafetensorsWriter w(out, entries, metadata);
  for (const auto& u : layout) {  // one unit in memory at a time
    const torch::Tensor flat = ck.read(u.unit, kind, u.numel);
    for (const auto& t : u.tensors) w.write(t.name, flat.narrow(0, t.offset, t.numel()).view(t.shape));
  }
  w.commit();
  summary.tensors = static_cast<int64_t>(entries.size());
  summary.bytes = w.bytes();
  return summary;
}

std::string load_checkpoint_weights(const std::string& checkpoint_dir, WeightsSource source,
                                    torch::nn::Module& module) {
  const CheckpointReader ck(checkpoint_dir);
  const std::vector<models::UnitLayout> layout = ck.layout();
  const std::string kind = weights_kind(ck, source);
  auto params = module.named_parameters(/*recurse=*/true);
  size_t seen = 0;
  torch::NoGradGuard no_grad;
  for (const auto& u : layout) {
    const torch::Tensor flat = ck.read(u.unit, kind, u.numel);
    for (const auto& t : u.tensors) {
      torch::Tensor* p = params.find(t.name);
      if (!p)
        throw Error(checkpoint_dir,
                    "tensor '" + t.name + "' is not a parameter of this model (a different model or preset?)");
      if (p->sizes().vec() != t.shape)
        throw Error(checkpoint_dir, "tensor '" + t.name + "' is " + c10::str(c10::IntArrayRef(t.shape)) +
                                        " in the checkpoint, " + c10::str(p->sizes()) + " in the model");
      p->copy_(flat.narrow(0, t.offset, t.numel()).view(t.shape).to(p->dtype()));
      ++seen;
    }
  }
  if (seen != params.size())
    throw Error(checkpoint_dir,
                "holds " + std::to_string(seen) + " of the model's " + std::to_string(params.size()) + " parameters");
  return kind;
}

void check_weights_file(const std::string& path) {
  const SafetensorsFile file(path);
  for (const auto& e : file.entries()) {
    if (!c10::isFloatingType(e.dtype)) continue;
    const int64_t bad = (~torch::isfinite(file.read(e.name))).sum().item<int64_t>();
    if (bad)
      throw Error(path, "tensor '" + e.name + "' has " + std::to_string(bad) +
                            " non-finite values (NaN or Inf): not usable as initial weights");
  }
}

void load_weights(const std::string& path, torch::nn::Module& module, const WeightsNaming& naming) {
  const SafetensorsFile file(path);
  const auto params = module.named_parameters(/*recurse=*/true);
  // The file's tensor of each parameter, by the module's names.
  std::map<std::string, const SafetensorsEntry*> by_module_name;
  for (const auto& e : file.entries()) {
    const std::string name = naming.module_name ? naming.module_name(e.name) : e.name;
    if (name.empty()) continue;
    if (!params.contains(name))
      throw Error(path, "tensor '" + e.name + "' is not a parameter of the model (a different model or preset?)");
    if (!by_module_name.emplace(name, &e).second)
      throw Error(path, "tensors '" + by_module_name.at(name)->name + "' and '" + e.name + "' are both parameter '" +
                            name + "'");
  }
  // Check everything first: nothing changes unless the whole file fits the model.
  for (const auto& p : params) {
    const auto it = by_module_name.find(p.key());
    if (it == by_module_name.end())
      throw Error(path, "has no tensor '" + p.key() + "', which the model has (a different model or preset?)");
    const SafetensorsEntry* e = it->second;
    if (e->shape != p.value().sizes().vec())
      throw Error(path, "tensor '" + e->name + "' has shape " + c10::str(c10::IntArrayRef(e->shape)) +
                            ", the model's is " + c10::str(p.value().sizes()));
    if (!c10::isFloatingType(e->dtype)) throw Error(path, "tensor '" + e->name + "' is not floating point");
  }
  // Read and check every tensor before any parameter changes: a NaN or an infinity in a weights
  // file is a broken export, never a starting point.
  std::vector<torch::Tensor> values;
  for (const auto& p : params) {
    const std::string& stored = by_module_name.at(p.key())->name;
    torch::Tensor v = file.read(stored).to(p.value().dtype());
    const int64_t bad = (~torch::isfinite(v)).sum().item<int64_t>();
    if (bad)
      throw Error(path, "tensor '" + stored + "' has " + std::to_string(bad) +
                            " non-finite values (NaN or Inf): not usable as initial weights");
    values.push_back(std::move(v));
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) params[i].value().copy_(values[i]);
}

}  // namespace dtrainer::ckpt
