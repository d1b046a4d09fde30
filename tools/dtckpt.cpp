// dtckpt — inspect dtrainer checkpoints and convert their weights (no MPI, no model needed).
//
//   dtckpt inspect PATH [--json] [--tensors]
//       PATH: a checkpoint (runs/X/ckpt/step_N), a run directory (its newest checkpoint) or a
//       .safetensors file. Prints step, units, parameters, what is stored, and the run's config.
//   dtckpt validate PATH [--structure-only] [--json]
//       every dataset present with the manifest's size, the layout consistent, values finite;
//       exit 0 when sound, 1 with one line per problem.
//   dtckpt export PATH --out FILE.safetensors [--weights auto|params|ema] [--dtype fp32|bf16|fp16]
//       one safetensors file with the model's parameter names (diffusers' names for the UNets);
//       `dtrainer --init-weights FILE` starts a run from it.

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/ckpt/safetensors.h"
#include "dtrainer/ckpt/validate_checkpoint.h"
#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/core/error.h"
#include "dtrainer/core/format_bytes.h"
#include "dtrainer/core/temp_files.h"

using namespace dtrainer;
using namespace dtrainer::ckpt;
using nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

// A checkpoint directory, or a run directory's newest complete checkpoint.
std::string resolve_checkpoint(const std::string& path) {
  if (fs::exists(fs::path(path) / "meta.json") || fs::exists(fs::path(path) / "COMPLETE")) return path;
  if (fs::is_directory(fs::path(path) / "ckpt")) {
    if (auto latest = latest_checkpoint((fs::path(path) / "ckpt").string())) return *latest;
    throw Error(path, "a run directory without a complete checkpoint in ckpt/");
  }
  if (fs::is_directory(path)) {
    if (auto latest = latest_checkpoint(path)) return *latest;
  }
  if (!fs::exists(path)) throw Error(path, "no such file or directory");
  throw Error(path, "neither a checkpoint (step_N/ with meta.json), a run directory nor a ckpt/ directory");
}

int inspect_safetensors(const std::string& path, bool json, bool tensors) {
  const SafetensorsFile f(path);
  int64_t elements = 0;
  for (const auto& e : f.entries()) elements += e.numel();
  if (json) {
    ordered_json out{
        {"path", path}, {"tensors", f.entries().size()}, {"elements", elements}, {"metadata", f.metadata()}};
    if (tensors) {
      ordered_json list = ordered_json::array();
      for (const auto& e : f.entries())
        list.push_back({{"name", e.name}, {"dtype", safetensors_dtype_name(e.dtype)}, {"shape", e.shape}});
      out["tensor_list"] = list;
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("%s: safetensors, %zu tensors, %lld elements (%.3f M), %s\n", path.c_str(), f.entries().size(),
              static_cast<long long>(elements), elements / 1e6,
              format_bytes(static_cast<double>(fs::file_size(path))).c_str());
  for (const auto& [k, v] : f.metadata())
    if (k != "config_toml") std::printf("  %-12s %s\n", k.c_str(), v.c_str());
  if (tensors)
    for (const auto& e : f.entries())
      std::printf("  %-70s %-5s %s\n", e.name.c_str(), safetensors_dtype_name(e.dtype),
                  c10::str(c10::IntArrayRef(e.shape)).c_str());
  return 0;
}

int inspect_checkpoint(const std::string& path, bool json, bool tensors) {
  const CheckpointReader ck(resolve_checkpoint(path));
  const auto units = ck.units();
  int64_t elements = 0;
  for (const auto& u : units) elements += u.second;
  const bool has_layout = ck.meta().contains("layout");
  const bool ema = ck.has_ema();
  const auto& m = ck.meta();
  const auto trainer = m.value("trainer", nlohmann::json::object());
  if (json) {
    ordered_json out{{"path", ck.dir()},
                     {"step", ck.step()},
                     {"optimizer_steps", m.value("optimizer_steps", int64_t{0})},
                     {"saved_by_world_size", m.value("saved_by_world_size", 0)},
                     {"samples", trainer.value("samples", int64_t{0})},
                     {"units", units.size()},
                     {"parameters", elements},
                     {"has_ema", ema},
                     {"has_layout", has_layout},
                     {"state_bytes", fs::file_size(ck.state_file())},
                     {"config_toml", m.value("config_toml", "")}};
    if (tensors) {
      ordered_json list = ordered_json::array();
      for (const auto& u : ck.layout())
        for (const auto& t : u.tensors) list.push_back({{"unit", u.unit}, {"name", t.name}, {"shape", t.shape}});
      out["tensor_list"] = list;
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("%s: step %lld (%lld optimizer steps, %lld samples), saved by %d ranks\n", ck.dir().c_str(),
              static_cast<long long>(ck.step()), static_cast<long long>(m.value("optimizer_steps", int64_t{0})),
              static_cast<long long>(trainer.value("samples", int64_t{0})), m.value("saved_by_world_size", 0));
  std::printf("  %zu units, %lld parameters (%.3f M); stored: params, m, v%s; state.h5 %s%s\n", units.size(),
              static_cast<long long>(elements), elements / 1e6, ema ? ", ema" : "",
              format_bytes(static_cast<double>(fs::file_size(ck.state_file()))).c_str(),
              has_layout ? "" : "; no parameter layout (saved by an older dtrainer: cannot be exported)");
  if (tensors) {
    for (const auto& u : ck.layout()) {
      std::printf("  [%s] %lld\n", u.unit.c_str(), static_cast<long long>(u.numel));
      for (const auto& t : u.tensors)
        std::printf("    %-68s %s\n", t.name.c_str(), c10::str(c10::IntArrayRef(t.shape)).c_str());
    }
  }
  if (m.contains("config_toml") && m["config_toml"].is_string())
    std::printf("config:\n%s", m["config_toml"].get<std::string>().c_str());
  return 0;
}

int validate(const std::string& path, bool values, bool json) {
  const CheckpointReader ck(resolve_checkpoint(path));
  const std::vector<std::string> problems = validate_checkpoint(ck, values);
  if (json) {
    std::cout << ordered_json({{"path", ck.dir()},
                               {"format_version", ck.format_version()},
                               {"values_checked", values},
                               {"ok", problems.empty()},
                               {"problems", problems}})
                     .dump(2)
              << "\n";
  } else {
    for (const auto& p : problems) std::printf("%s: %s\n", ck.dir().c_str(), p.c_str());
    std::printf("%s: %s (format %d, %zu units, %s)\n", ck.dir().c_str(), problems.empty() ? "sound" : "BROKEN",
                ck.format_version(), ck.units().size(), values ? "structure and values checked" : "structure checked");
  }
  return problems.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "dtckpt: inspect dtrainer checkpoints and export their weights.\n"
      "  dtckpt inspect runs/X                                  the run's newest checkpoint\n"
      "  dtckpt validate runs/X                                 is it whole and sound?\n"
      "  dtckpt export runs/X --out model.safetensors           its weights (EMA if kept), named as the model's "
      "parameters\n"
      "  mpirun -n 2 dtrainer --init-weights model.safetensors  a new run that starts from them"};
  app.require_subcommand(1);
  std::string path, out, weights = "auto", dtype = "fp32";
  bool json = false, tensors = false, force = false;
  CLI::App* in = app.add_subcommand("inspect", "what a checkpoint (or run directory, or .safetensors file) holds");
  in->add_option("PATH", path, "checkpoint directory (runs/X/ckpt/step_N), run directory, or .safetensors file")
      ->required();
  in->add_flag("--json", json, "print JSON");
  in->add_flag("--tensors", tensors, "list every tensor: name and shape");
  bool structure_only = false;
  CLI::App* va =
      app.add_subcommand("validate", "check a checkpoint: datasets, sizes, layout, finite values (exit 1 when broken)");
  va->add_option("PATH", path, "checkpoint directory, or a run directory (its newest checkpoint)")->required();
  va->add_flag("--structure-only", structure_only, "check names and sizes without reading the data");
  va->add_flag("--json", json, "print JSON");
  CLI::App* ex = app.add_subcommand("export", "a checkpoint's weights as one .safetensors file");
  ex->add_option("PATH", path, "checkpoint directory, or a run directory (its newest checkpoint)")->required();
  ex->add_option("--out,-o", out, "the .safetensors file to write (written atomically)")->required();
  ex->add_option("--weights", weights, "auto (EMA when kept, else params), params (the trained weights) or ema")
      ->check(CLI::IsMember(name_table(WeightsSource{}).names()))
      ->capture_default_str();
  ex->add_option("--dtype", dtype, "element type in the file")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  ex->add_flag("--force", force, "replace an existing --out file");
  CLI11_PARSE(app, argc, argv);
  remove_temp_files_on_signals();  // (an interrupted export leaves no FILE.tmp-PID behind)
  try {
    if (*in) {
      if (fs::is_regular_file(path)) return inspect_safetensors(path, json, tensors);
      return inspect_checkpoint(path, json, tensors);
    }
    if (*va) return validate(path, !structure_only, json);
    if (fs::exists(out) && !force) throw Error(out, "exists; pass --force to replace it");
    ExportOptions o;
    o.source = parse_weights_source("--weights", weights);
    o.dtype = dtype == "bf16" ? torch::kBFloat16 : dtype == "fp16" ? torch::kFloat16 : torch::kFloat32;
    const std::string dir = resolve_checkpoint(path);
    const ExportSummary s = export_weights(dir, out, o);
    std::printf("%s: %lld tensors, %lld parameters (%s weights, %s) from %s (step %lld), %s\n", out.c_str(),
                static_cast<long long>(s.tensors), static_cast<long long>(s.elements), s.source.c_str(), dtype.c_str(),
                dir.c_str(), static_cast<long long>(s.step), format_bytes(static_cast<double>(s.bytes)).c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "dtckpt: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dtckpt: error: %s\n", e.what());
    return 1;
  }
}
