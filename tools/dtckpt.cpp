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
//   dtckpt phema RUN_DIR --sigma-rel 0.07[,0.1,...] [--at-images N] [--out FILE] [--dtype ...]
//       EDM2's post-hoc EMA: the run's average for each sigma_rel, reconstructed from its
//       power-function snapshots (ema = "phema"), one safetensors file each (docs/TRAINING.md).
//   inspect and validate of a run directory also list and check its phema snapshots.

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "dtrainer/ckpt/checkpoint.h"
#include "dtrainer/ckpt/phema_reconstruct.h"
#include "dtrainer/ckpt/phema_snapshot.h"
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

// The run's phema snapshots (root: <run>/phema), as JSON: each one's images, step and size.
ordered_json snapshot_list(const std::string& root) {
  ordered_json list = ordered_json::array();
  for (const auto& [images, dir] : complete_phema_snapshots(root)) {
    const PhemaSnapshotReader s(dir);
    ordered_json profiles = ordered_json::array();
    for (const auto& p : s.profiles()) profiles.push_back(p.sigma_rel);
    list.push_back({{"dir", dir},
                    {"images", images},
                    {"step", s.step()},
                    {"sigma_rel", profiles},
                    {"dtype", s.meta().value("dtype", "")},
                    {"bytes", fs::file_size(fs::path(dir) / "state.h5")}});
  }
  return list;
}

void print_snapshots(const std::string& root, bool json) {
  const ordered_json list = snapshot_list(root);
  if (json) {
    std::cout << ordered_json({{"phema_snapshots", list}}).dump(2) << "\n";
    return;
  }
  if (list.empty()) return;
  double bytes = 0;
  std::string sigmas;
  for (const auto& s : list) bytes += s["bytes"].get<double>();
  for (const auto& v : list.back()["sigma_rel"]) {
    char b[24];
    std::snprintf(b, sizeof b, "%s%g", sigmas.empty() ? "" : ", ", v.get<double>());
    sigmas += b;
  }
  std::printf("phema snapshots: %zu in %s (images %lld to %lld; sigma_rel %s; %s; %s)\n", list.size(), root.c_str(),
              static_cast<long long>(list.front()["images"].get<int64_t>()),
              static_cast<long long>(list.back()["images"].get<int64_t>()), sigmas.c_str(),
              list.back()["dtype"].get<std::string>().c_str(), format_bytes(bytes).c_str());
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
                     {"averages", ck.averages()},
                     {"has_layout", has_layout},
                     {"state_bytes", fs::file_size(ck.state_file())},
                     {"config_toml", m.value("config_toml", "")}};
    if (tensors) {
      ordered_json list = ordered_json::array();
      for (const auto& u : ck.layout())
        for (const auto& t : u.tensors) list.push_back({{"unit", u.unit}, {"name", t.name}, {"shape", t.shape}});
      out["tensor_list"] = list;
    }
    if (fs::is_directory(fs::path(path) / "phema"))
      out["phema_snapshots"] = snapshot_list((fs::path(path) / "phema").string());
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::string stored;
  for (const auto& a : ck.averages()) stored += ", " + a;
  std::printf("%s: step %lld (%lld optimizer steps, %lld samples), saved by %d ranks\n", ck.dir().c_str(),
              static_cast<long long>(ck.step()), static_cast<long long>(m.value("optimizer_steps", int64_t{0})),
              static_cast<long long>(trainer.value("samples", int64_t{0})), m.value("saved_by_world_size", 0));
  std::printf("  %zu units, %lld parameters (%.3f M); stored: params, m, v%s; state.h5 %s%s\n", units.size(),
              static_cast<long long>(elements), elements / 1e6, stored.c_str(),
              format_bytes(static_cast<double>(fs::file_size(ck.state_file()))).c_str(),
              has_layout ? "" : "; no parameter layout (saved by an older dtrainer: cannot be exported)");
  if (m.contains("latent_size") && m.contains("resolution_scale"))  // (what a later stage reads: init_from)
    std::printf("  trained at latent side %lld, resolution scale S = %g\n",
                static_cast<long long>(m.value("latent_size", int64_t{0})), m.value("resolution_scale", 1.0));
  if (tensors) {
    for (const auto& u : ck.layout()) {
      std::printf("  [%s] %lld\n", u.unit.c_str(), static_cast<long long>(u.numel));
      for (const auto& t : u.tensors)
        std::printf("    %-68s %s\n", t.name.c_str(), c10::str(c10::IntArrayRef(t.shape)).c_str());
    }
  }
  if (fs::is_directory(fs::path(path) / "phema")) print_snapshots((fs::path(path) / "phema").string(), false);
  if (m.contains("config_toml") && m["config_toml"].is_string())
    std::printf("config:\n%s", m["config_toml"].get<std::string>().c_str());
  return 0;
}

// A snapshot root (<run>/phema) on its own.
bool is_snapshot_root(const std::string& path) { return !complete_phema_snapshots(path).empty(); }

// The output file of each sigma_rel: --out as given (one sigma_rel), --out with {sigma_rel}
// replaced, or <run>/posthoc/phema_<sigma>-img_<images>.safetensors.
std::vector<std::string> phema_outputs(const std::string& run, const std::string& out,
                                       const std::vector<double>& sigmas, int64_t at_images) {
  const std::string key = "{sigma_rel}";
  std::vector<std::string> outs;
  for (const double s : sigmas) {
    const std::string name = parallel::phema_name(s).substr(6);
    if (out.empty()) {
      const fs::path dir = fs::path(run) / "posthoc";
      fs::create_directories(dir);
      outs.push_back(
          (dir / ("phema_" + name + (at_images > 0 ? "-" + phema_snapshot_name(at_images) : "") + ".safetensors"))
              .string());
    } else if (out.find(key) != std::string::npos) {
      std::string o = out;
      o.replace(o.find(key), key.size(), name);
      outs.push_back(o);
    } else if (sigmas.size() == 1) {
      outs.push_back(out);
    } else {
      throw Error("--out", "one file for " + std::to_string(sigmas.size()) +
                               " sigma_rel values: put {sigma_rel} in the name (e.g. w-{sigma_rel}.safetensors)");
    }
  }
  return outs;
}

int phema(const std::string& path, const std::vector<double>& sigmas, int64_t at_images, const std::string& out,
          const std::string& dtype, bool force, bool json) {
  const std::string root = phema_root(path);
  const auto all = complete_phema_snapshots(root);
  const int64_t at = at_images > 0 ? at_images : (all.empty() ? 0 : all.back().first);
  const std::string run = root == path ? fs::path(path).parent_path().string() : path;
  for (const double s : sigmas) parallel::phema_gamma(s, "--sigma-rel");  // (before anything is written)
  PhemaRequest request;
  request.sigma_rel = sigmas;
  request.at_images = at_images;
  request.outs = phema_outputs(run, out, sigmas, at);
  for (const auto& o : request.outs)
    if (fs::exists(o) && !force) throw Error(o, "exists; pass --force to replace it");
  request.dtype = dtype == "bf16" ? torch::kBFloat16 : dtype == "fp16" ? torch::kFloat16 : torch::kFloat32;
  size_t shown = 0;
  const PhemaReconstruction r = reconstruct_phema(root, request, [&](size_t done, size_t units) {
    if (json || units < 40) return;
    const size_t tenth = done * 10 / units;  // (a progress line every tenth of a large model)
    if (tenth > shown) std::fprintf(stderr, "dtckpt phema: %zu/%zu units\n", done, units), shown = tenth;
  });
  if (json) {
    ordered_json outputs = ordered_json::array();
    for (const auto& o : r.outputs)
      outputs.push_back({{"sigma_rel", o.sigma_rel},
                         {"gamma", o.gamma},
                         {"out", o.out},
                         {"bytes", o.bytes},
                         {"relative_error", o.solution.relative_error},
                         {"weights", o.solution.weights}});
    std::cout << ordered_json({{"snapshots", root},
                               {"at_images", r.at_images},
                               {"step", r.step},
                               {"inputs", r.inputs},
                               {"tensors", r.tensors},
                               {"elements", r.elements},
                               {"outputs", outputs}})
                     .dump(2)
              << "\n";
    return 0;
  }
  std::printf("post-hoc EMA at %lld images (step %lld) from %zu snapshot profiles in %s:\n",
              static_cast<long long>(r.at_images), static_cast<long long>(r.step), r.inputs.size(), root.c_str());
  for (const auto& o : r.outputs)
    std::printf("  sigma_rel %-7g gamma %-8.3f fit error %.2e  %s (%s)\n", o.sigma_rel, o.gamma,
                o.solution.relative_error, o.out.c_str(), format_bytes(static_cast<double>(o.bytes)).c_str());
  return 0;
}

int validate(const std::string& path, bool values, bool json) {
  if (is_snapshot_root(path)) {  // <run>/phema alone
    const std::vector<std::string> problems = validate_phema_snapshots(path, values);
    if (json)
      std::cout << ordered_json({{"path", path}, {"ok", problems.empty()}, {"problems", problems}}).dump(2) << "\n";
    for (const auto& p : problems)
      if (!json) std::printf("%s\n", p.c_str());
    if (!json)
      std::printf("%s: %s (%zu phema snapshots)\n", path.c_str(), problems.empty() ? "sound" : "BROKEN",
                  complete_phema_snapshots(path).size());
    return problems.empty() ? 0 : 1;
  }
  const CheckpointReader ck(resolve_checkpoint(path));
  std::vector<std::string> problems = validate_checkpoint(ck, values);
  const fs::path snaps = fs::path(path) / "phema";
  const bool with_snapshots = fs::is_directory(snaps);
  if (with_snapshots)
    for (const auto& p : validate_phema_snapshots(snaps.string(), values)) problems.push_back(p);
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
    std::printf("%s: %s (format %d, %zu units, %s%s)\n", ck.dir().c_str(), problems.empty() ? "sound" : "BROKEN",
                ck.format_version(), ck.units().size(), values ? "structure and values checked" : "structure checked",
                with_snapshots ? ("; " + std::to_string(complete_phema_snapshots(snaps.string()).size()) +
                                  " phema snapshots checked")
                                     .c_str()
                               : "");
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
      "  mpirun -n 2 dtrainer --init-weights model.safetensors  a new run that starts from them\n"
      "  dtckpt phema runs/X --sigma-rel 0.05,0.1,0.2            post-hoc EMA of a run trained with ema = \"phema\""};
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
  std::vector<double> sigmas;
  int64_t at_images = 0;
  CLI::App* ph = app.add_subcommand(
      "phema", "EDM2's post-hoc EMA: the run's weights averaged with any sigma_rel, from its phema snapshots");
  ph->add_option("RUN", path, "run directory trained with ema = \"phema\" (or its phema/ directory)")->required();
  ph->add_option("--sigma-rel", sigmas,
                 "widths to reconstruct, relative to the training time (comma-separated; each in (0, 0.2887))")
      ->required()
      ->delimiter(',');
  ph->add_option("--at-images", at_images,
                 "the training time to reconstruct, in images (a snapshot's; default: the newest)");
  ph->add_option("--out,-o", out,
                 "the .safetensors file ({sigma_rel} in the name for several; default: "
                 "RUN/posthoc/phema_SIGMA-img_N.safetensors)");
  ph->add_option("--dtype", dtype, "element type in the file")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  ph->add_flag("--force", force, "replace existing output files");
  ph->add_flag("--json", json, "print the solve (inputs, weights, fit error) as JSON");
  CLI11_PARSE(app, argc, argv);
  remove_temp_files_on_signals();  // (an interrupted export leaves no FILE.tmp-PID behind)
  try {
    if (*in) {
      if (fs::is_regular_file(path)) return inspect_safetensors(path, json, tensors);
      if (is_snapshot_root(path)) return print_snapshots(path, json), 0;
      return inspect_checkpoint(path, json, tensors);
    }
    if (*va) return validate(path, !structure_only, json);
    if (*ph) return phema(path, sigmas, at_images, out, dtype, force, json);
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
