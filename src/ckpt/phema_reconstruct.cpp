#include "dtrainer/ckpt/phema_reconstruct.h"

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include <torch/torch.h>

#include "dtrainer/ckpt/phema_snapshot.h"
#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/core/error.h"

namespace fs = std::filesystem;

namespace dtrainer::ckpt {

std::string phema_root(const std::string& path) {
  if (!complete_phema_snapshots(path).empty() || fs::path(path).filename() == "phema") return path;
  return (fs::path(path) / "phema").string();
}

PhemaReconstruction reconstruct_phema(const std::string& path, const PhemaRequest& request,
                                      const std::function<void(size_t, size_t)>& progress) {
  if (request.sigma_rel.empty()) throw Error("--sigma-rel", "no sigma_rel to reconstruct");
  if (request.outs.size() != request.sigma_rel.size()) throw Error("phema", "one output per sigma_rel");
  if (request.dtype != torch::kFloat32 && request.dtype != torch::kBFloat16 && request.dtype != torch::kFloat16)
    throw Error("--dtype", "weights are written as F32, BF16 or F16");
  const std::string root = phema_root(path);
  const auto all = complete_phema_snapshots(root);
  if (all.empty())
    throw Error(path, std::string("has no phema snapshots (") + root +
                          "/img_*): train with ema = \"phema\" to keep them (docs/TRAINING.md, Weight averages)");
  PhemaReconstruction r;
  r.at_images = request.at_images > 0 ? request.at_images : all.back().first;
  bool found = false;
  for (const auto& s : all) found |= s.first == r.at_images;
  if (!found) {
    std::string times;
    for (size_t i = all.size() > 6 ? all.size() - 6 : 0; i < all.size(); ++i)
      times += (times.empty() ? "" : ", ") + std::to_string(all[i].first);
    throw Error("--at-images", std::to_string(r.at_images) + " is not a snapshot's time (the newest: " + times + ")");
  }

  // The snapshots up to the target time, checked against the newest of them.
  std::vector<std::unique_ptr<PhemaSnapshotReader>> snaps;
  for (const auto& [images, dir] : all)
    if (images <= r.at_images) snaps.push_back(std::make_unique<PhemaSnapshotReader>(dir));
  const PhemaSnapshotReader& newest = *snaps.back();
  r.step = newest.step();
  for (const auto& s : snaps) {
    const std::string mismatch = phema_snapshot_mismatch(*s, newest);
    if (!mismatch.empty()) throw Error(s->dir(), mismatch + " (remove it from " + root + ")");
  }
  struct Input {
    const PhemaSnapshotReader* snapshot;
    std::string profile;
  };
  std::vector<Input> inputs;
  for (const auto& s : snaps)
    for (const auto& p : s->profiles()) {
      inputs.push_back({s.get(), p.name});
      r.inputs.push_back(fs::path(s->dir()).filename().string() + "/" + p.name);
      r.profiles.push_back({static_cast<double>(s->images()), p.gamma});
    }
  for (size_t k = 0; k < request.sigma_rel.size(); ++k) {
    PhemaOutput o;
    o.sigma_rel = request.sigma_rel[k];
    o.gamma = parallel::phema_gamma(o.sigma_rel, "--sigma-rel");
    o.out = request.outs[k];
    o.solution = parallel::phema_solve(r.profiles, {static_cast<double>(r.at_images), o.gamma});
    r.outputs.push_back(o);
  }

  // One writer per target; each unit of each input read once and added to every target.
  const std::vector<models::UnitLayout> layout = newest.layout();
  std::vector<SafetensorsEntry> entries;
  for (const auto& u : layout)
    for (const auto& t : u.tensors) {
      entries.push_back({t.name, request.dtype, t.shape, 0, 0});
      r.elements += t.numel();
    }
  r.tensors = static_cast<int64_t>(entries.size());
  std::vector<std::unique_ptr<SafetensorsWriter>> writers;
  for (const auto& o : r.outputs) {
    char sigma[32], gamma[32], err[32];
    std::snprintf(sigma, sizeof sigma, "%.6g", o.sigma_rel);
    std::snprintf(gamma, sizeof gamma, "%.9g", o.gamma);
    std::snprintf(err, sizeof err, "%.3g", o.solution.relative_error);
    std::map<std::string, std::string> metadata{{"format", "pt"},
                                                {"producer", "dtrainer"},
                                                {"weights", parallel::phema_name(o.sigma_rel) + " (post-hoc)"},
                                                {"phema_sigma_rel", sigma},
                                                {"phema_gamma", gamma},
                                                {"phema_at_images", std::to_string(r.at_images)},
                                                {"phema_inputs", std::to_string(inputs.size())},
                                                {"phema_relative_error", err},
                                                {"snapshots", root},
                                                {"step", std::to_string(r.step)}};
    if (newest.meta().contains("config_toml") && newest.meta()["config_toml"].is_string())
      metadata["config_toml"] = newest.meta()["config_toml"].get<std::string>();
    writers.push_back(std::make_unique<SafetensorsWriter>(o.out, entries, metadata));
  }
  for (size_t ui = 0; ui < layout.size(); ++ui) {
    const auto& u = layout[ui];
    std::vector<torch::Tensor> sums(r.outputs.size());
    for (auto& s : sums) s = torch::zeros({u.numel}, torch::kFloat64);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const torch::Tensor x = inputs[i].snapshot->read(u.unit, inputs[i].profile, u.numel).to(torch::kFloat64);
      for (size_t k = 0; k < sums.size(); ++k) sums[k].add_(x, r.outputs[k].solution.weights[i]);
    }
    for (size_t k = 0; k < sums.size(); ++k) {
      const torch::Tensor flat = sums[k].to(torch::kFloat32);
      for (const auto& t : u.tensors) writers[k]->write(t.name, flat.narrow(0, t.offset, t.numel()).view(t.shape));
    }
    if (progress) progress(ui + 1, layout.size());
  }
  for (size_t k = 0; k < writers.size(); ++k) {
    writers[k]->commit();
    r.outputs[k].bytes = writers[k]->bytes();
  }
  return r;
}

}  // namespace dtrainer::ckpt
