// dtmodel — describe the backbones dtrainer can train: exact parameter counts and per-sample
// compute, from the analytic counter (no weights are allocated, so a 4B model costs nothing).
//
//   dtmodel list [--json] [--resolution R] [--text-len T] [--context-dim D]
//   dtmodel describe NAME [--json] [--resolution R] [--batch B] [--dtype fp32|bf16] [field overrides]
//   (UNet presets take --<field> overrides, transformer presets --set KEY=VALUE)

#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "dtrainer/core/error.h"
#include "dtrainer/models/transformer_cost.h"
#include "dtrainer/models/unet_cost.h"
#include "dtrainer/models/backbone_spec.h"
#include "dtrainer/models/unet_presets.h"

using namespace dtrainer;
using namespace dtrainer::models;
using nlohmann::ordered_json;

namespace {

struct Query {
  int64_t resolution = 256;  // image pixels
  int64_t latent_scale = 8;  // VAE downsampling factor (SDXL-VAE: 8; pixel-space data: 1)
  int64_t text_len = 77;
  int64_t batch = 1;
  std::string dtype = "fp32";
};

int64_t bytes_per_elem(const std::string& dtype) {
  if (dtype == "fp32") return 4;
  if (dtype == "bf16" || dtype == "fp16") return 2;
  throw Error("--dtype", "expected fp32, bf16 or fp16, got '" + dtype + "'");
}

UNetCost count_at(UNetSpec& spec, const Query& q) {
  if (q.resolution < 1 || q.latent_scale < 1 || q.resolution % q.latent_scale)
    throw Error("--resolution", std::to_string(q.resolution) + " px is not divisible by --latent-scale " +
                                    std::to_string(q.latent_scale));
  spec.sample_size = q.resolution / q.latent_scale;
  return count_unet(spec, {spec.sample_size, spec.sample_size, q.text_len});
}

std::string human(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.3f G", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.3f M", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.3f K", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

// The keys every model's summary has, UNet or transformer.
ordered_json common_json(const std::string& name, const std::string& family, const std::string& layout, int64_t params,
                         int64_t params_transformer, const OpCount& total, int64_t macs_transformer, const Query& q,
                         int64_t in_channels, int64_t sample_size, int64_t text_len, int64_t context_dim) {
  ordered_json j;
  j["name"] = name;
  j["family"] = family;
  j["layout"] = layout;
  j["params"] = params;
  j["params_transformer"] = params_transformer;
  j["macs_linear_conv"] = total.macs_linear_conv;
  j["macs_attention"] = total.macs_attention;
  j["flops"] = total.flops();
  j["macs_transformer"] = macs_transformer;
  j["resolution"] = q.resolution;
  j["latent"] = {in_channels, sample_size, sample_size};
  j["text_len"] = text_len;
  j["context_dim"] = context_dim;
  return j;
}

// Batch, dtype and the memory they imply.
void add_memory_json(ordered_json& j, int64_t activation_elems, int64_t params, const Query& q) {
  const int64_t bytes = bytes_per_elem(q.dtype);
  j["batch"] = q.batch;
  j["dtype"] = q.dtype;
  j["activation_elems_per_sample"] = activation_elems;
  j["activation_bytes"] = activation_elems * q.batch * bytes;
  j["param_bytes"] = params * bytes;
}

ordered_json summary_json(const UNetSpec& spec, const UNetCost& c, const Query& q) {
  ordered_json j = common_json(spec.name, "unet", to_string(spec.layout), c.num_params, c.params_transformer, c.total,
                               c.transformer.macs_linear_conv + c.transformer.macs_attention, q, spec.in_channels,
                               spec.sample_size, spec.num_classes > 0 ? 1 : q.text_len, spec.context_dim);
  return j;
}

ordered_json describe_json(const UNetSpec& spec, const UNetCost& c, const Query& q) {
  ordered_json j = summary_json(spec, c, q);
  add_memory_json(j, c.total.activation_elems, c.num_params, q);
  ordered_json fields;
  for (const auto& f : unet_fields()) fields[f.key] = get_unet_field(spec, f.key);
  fields["mid_transformer_depth_resolved"] = spec.mid_depth();
  j["fields"] = fields;
  ordered_json stages = ordered_json::array();
  for (const auto& s : c.stages) {
    ordered_json st;
    st["name"] = s.name;
    st["level"] = s.level;
    st["resolution"] = s.level >= 0 ? (spec.sample_size >> s.level) : 0;
    st["params"] = s.params;
    st["params_transformer"] = s.params_transformer;
    st["macs_linear_conv"] = s.ops.macs_linear_conv;
    st["macs_attention"] = s.ops.macs_attention;
    st["macs_transformer"] = s.transformer.macs_linear_conv + s.transformer.macs_attention;
    st["activation_elems_per_sample"] = s.ops.activation_elems;
    stages.push_back(st);
  }
  j["stages"] = stages;
  return j;
}

// ---- transformers (same keys; no per-stage table: every block is the same) ----

TransformerCost count_transformer_at(TransformerSpec& spec, const Query& q) {
  if (q.resolution < 1 || q.latent_scale < 1 || q.resolution % q.latent_scale)
    throw Error("--resolution", std::to_string(q.resolution) + " px is not divisible by --latent-scale " +
                                    std::to_string(q.latent_scale));
  spec.sample_size = q.resolution / q.latent_scale;
  // class-conditional DiT reads no text
  return count_transformer(spec, spec.family == TransformerFamily::kDiT ? 0 : q.text_len);
}

ordered_json transformer_json(const TransformerSpec& spec, const TransformerCost& c, const Query& q, bool full) {
  ordered_json j =
      common_json(spec.name, to_string(spec.family), to_string(spec.family), c.num_params, c.num_params, c.total,
                  c.total.macs_linear_conv + c.total.macs_attention, q, spec.in_channels, spec.sample_size,
                  spec.family == TransformerFamily::kDiT ? 0 : q.text_len, spec.context_dim);
  if (!full) return j;
  add_memory_json(j, c.total.activation_elems, c.num_params, q);
  ordered_json fields;
  fields["family"] = to_string(spec.family);
  fields["patch_size"] = spec.patch_size;
  fields["hidden_size"] = spec.hidden_size;
  fields["depth"] = spec.depth;
  fields["num_heads"] = spec.num_heads;
  fields["mlp_ratio"] = spec.mlp_ratio;
  fields["context_dim"] = spec.context_dim;
  fields["in_channels"] = spec.in_channels;
  fields["learn_sigma"] = spec.learn_sigma;
  fields["sample_size"] = spec.sample_size;
  fields["conditioning"] = spec.conditioning;
  fields["caption_mlp"] = spec.has_caption_mlp();
  fields["pos_embed_grid"] = spec.pos_embed_grid;
  j["fields"] = fields;
  return j;
}

void print_transformer(const TransformerSpec& spec, const TransformerCost& c, const Query& q) {
  const ordered_json j = transformer_json(spec, c, q, true);
  std::printf("%s  (transformer, %s)\n", spec.name.c_str(), to_string(spec.family));
  for (const auto& [k, v] : j["fields"].items()) std::printf("  %-22s %s\n", k.c_str(), v.dump().c_str());
  std::printf("\nper sample, one forward at %lld px (%lld tokens), %lld text tokens:\n",
              static_cast<long long>(q.resolution), static_cast<long long>(spec.tokens()),
              static_cast<long long>(j["text_len"].get<int64_t>()));
  std::printf("  %-22s %lld (%s)\n", "params", static_cast<long long>(c.num_params),
              human(static_cast<double>(c.num_params)).c_str());
  std::printf("  %-22s %s  [S1] convention\n", "macs_linear_conv",
              human(static_cast<double>(c.total.macs_linear_conv)).c_str());
  std::printf("  %-22s %s\n", "macs_attention", human(static_cast<double>(c.total.macs_attention)).c_str());
  std::printf("  %-22s %s  [S2] convention: 2 x all MACs\n", "flops",
              human(static_cast<double>(c.total.flops())).c_str());
  std::printf("  %-22s %s for batch %lld in %s\n", "activation_bytes",
              human(static_cast<double>(j["activation_bytes"].get<int64_t>())).c_str(), static_cast<long long>(q.batch),
              q.dtype.c_str());
}

void print_describe(const UNetSpec& spec, const UNetCost& c, const Query& q) {
  const int64_t bytes = bytes_per_elem(q.dtype);
  std::printf("%s  (UNet, %s layout)\n", spec.name.c_str(),
              spec.layout == UNetLayout::kDeepFloydIF ? "DeepFloyd-IF" : "diffusers SD/SDXL");
  for (const auto& f : unet_fields())
    if (f.key != "attention_levels") std::printf("  %-22s %s\n", f.key.c_str(), get_unet_field(spec, f.key).c_str());
  std::printf("  %-22s %s (levels, 0 = full latent resolution)\n", "attention_levels",
              get_unet_field(spec, "attention_levels").c_str());
  std::printf("  %-22s %lld\n\n", "mid depth (resolved)", static_cast<long long>(spec.mid_depth()));
  std::printf("parameters          %lld  (%s; %s in transformer stacks)\n", static_cast<long long>(c.num_params),
              human(c.num_params).c_str(), human(c.params_transformer).c_str());
  std::printf("compute per sample, one forward at %lld px (latent %lldx%lldx%lld, %s %lldx%lld):\n",
              static_cast<long long>(q.resolution), static_cast<long long>(spec.in_channels),
              static_cast<long long>(spec.sample_size), static_cast<long long>(spec.sample_size),
              spec.num_classes > 0 ? "class token" : "text",
              static_cast<long long>(spec.num_classes > 0 ? 1 : q.text_len), static_cast<long long>(spec.context_dim));
  const double all_macs = static_cast<double>(c.total.macs_linear_conv + c.total.macs_attention);
  const double tr_macs = static_cast<double>(c.transformer.macs_linear_conv + c.transformer.macs_attention);
  std::printf("  macs_linear_conv  %sMAC  [S1] convention: conv + linear weight MACs\n",
              human(c.total.macs_linear_conv).c_str());
  std::printf("  macs_attention    %sMAC  QK^T and AV products\n", human(c.total.macs_attention).c_str());
  std::printf("  flops             %sFLOP [S2] convention: 2 x all MACs\n", human(c.total.flops()).c_str());
  std::printf("  macs_transformer  %sMAC  inside transformer stacks (%.1f%% of all MACs)\n", human(tr_macs).c_str(),
              all_macs > 0 ? 100.0 * tr_macs / all_macs : 0.0);
  std::printf(
      "memory (%s): weights %sB; activations for batch %lld ~%sB (lower bound: conv/linear/norm outputs + attention "
      "probabilities)\n\n",
      q.dtype.c_str(), human(c.num_params * bytes).c_str(), static_cast<long long>(q.batch),
      human(c.total.activation_elems * q.batch * bytes).c_str());
  std::printf("%-16s %5s %5s %14s %14s %14s %14s\n", "stage", "level", "res", "params", "macs_lin_conv", "macs_attn",
              "macs_transf");
  for (const auto& s : c.stages) {
    const std::string res = s.level >= 0 ? std::to_string(spec.sample_size >> s.level) : "-";
    const std::string lvl = s.level >= 0 ? std::to_string(s.level) : "-";
    std::printf("%-16s %5s %5s %14s %14s %14s %14s\n", s.name.c_str(), lvl.c_str(), res.c_str(),
                human(s.params).c_str(), human(s.ops.macs_linear_conv).c_str(), human(s.ops.macs_attention).c_str(),
                human(s.transformer.macs_linear_conv + s.transformer.macs_attention).c_str());
  }
}

void add_query_options(CLI::App* app, Query& q, bool with_batch) {
  app->add_option("--resolution", q.resolution, "image resolution in pixels the compute is counted at")
      ->capture_default_str();
  app->add_option("--latent-scale", q.latent_scale, "pixels per latent cell (SDXL-VAE: 8; pixel data: 1)")
      ->capture_default_str();
  app->add_option("--text-len", q.text_len, "text tokens T that cross-attention reads")->capture_default_str();
  if (with_batch) {
    app->add_option("--batch", q.batch, "batch size for the activation-memory estimate")->capture_default_str();
    app->add_option("--dtype", q.dtype, "fp32, bf16 or fp16, for the memory figures")->capture_default_str();
  }
}

// ---- Each family's pages -------------------------------------------------------------------------
// The registry (models/backbone_spec.h) says which families and presets exist; these are how dtmodel
// shows one family's presets: a list row each, and a describe page.

struct DescribeArgs {
  const std::string& name;
  const Query& q;
  bool json;
  std::map<std::string, std::string>& unet_fields_set;  // --<unet-field> VALUE
  const std::vector<std::string>& transformer_set;      // --set KEY=VALUE
};

struct FamilyPages {
  void (*list)(const Query& q, const std::string& context_dim, bool json, ordered_json& arr);
  void (*describe)(const DescribeArgs& a);
};

void list_unets(const Query& q, const std::string& list_context, bool json, ordered_json& arr) {
  for (UNetSpec spec : unet_presets()) {
    if (!list_context.empty()) set_unet_field(spec, "context_dim", list_context);
    const UNetCost c = count_at(spec, q);
    if (json)
      arr.push_back(summary_json(spec, c, q));
    else
      std::printf("%-18s %-6s %14lld %10.3f %18.2f %12.2f\n", spec.name.c_str(), to_string(spec.layout),
                  static_cast<long long>(c.num_params), c.num_params / 1e9, c.total.macs_linear_conv / 1e9,
                  c.total.flops() / 1e9);
  }
}

void list_transformers(const Query& q, const std::string& list_context, bool json, ordered_json& arr) {
  for (TransformerSpec spec : transformer_presets()) {
    if (!list_context.empty()) set_transformer_field(spec, "context_dim", list_context);
    const TransformerCost c = count_transformer_at(spec, q);
    if (json)
      arr.push_back(transformer_json(spec, c, q, false));
    else
      std::printf("%-18s %-6s %14lld %10.3f %18.2f %12.2f\n", spec.name.c_str(), to_string(spec.family),
                  static_cast<long long>(c.num_params), c.num_params / 1e9, c.total.macs_linear_conv / 1e9,
                  c.total.flops() / 1e9);
  }
}

void describe_transformer(const DescribeArgs& a) {
  TransformerSpec spec = transformer_preset(a.name);
  for (const auto& kv : a.transformer_set) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) throw Error("--set", "'" + kv + "' is not KEY=VALUE");
    set_transformer_field(spec, kv.substr(0, eq), kv.substr(eq + 1));
  }
  if (!a.transformer_set.empty()) spec.name += "+overrides";
  const TransformerCost c = count_transformer_at(spec, a.q);
  if (a.json)
    std::cout << transformer_json(spec, c, a.q, true).dump(2) << "\n";
  else
    print_transformer(spec, c, a.q);
}

void describe_unet(const DescribeArgs& a) {
  UNetSpec spec = unet_preset(a.name);
  bool overridden = false;
  for (const auto& f : unet_fields()) {  // declaration order: attention_levels after transformer_depth
    const std::string& v = a.unet_fields_set[f.key];
    if (v.empty()) continue;
    set_unet_field(spec, f.key, v);
    overridden = true;
  }
  if (overridden) spec.name += "+overrides";
  const UNetCost c = count_at(spec, a.q);
  if (a.json)
    std::cout << describe_json(spec, c, a.q).dump(2) << "\n";
  else
    print_describe(spec, c, a.q);
}

// A family with no pages of its own is shown from the registry alone: its summary and cost at the
// query's resolution and text length.
BackboneSpec generic_spec(const BackboneFamily& f, const std::string& preset, const Query& q) {
  BackboneInputs in = f.preset_inputs(preset);
  in.latent_size = q.resolution / q.latent_scale;
  in.text_len = q.text_len;
  return f.resolve(preset, {}, in, false);
}

ordered_json generic_json(const BackboneFamily& f, const std::string& preset, const Query& q) {
  const BackboneSpec spec = generic_spec(f, preset, q);
  const BackboneCost c = f.cost(spec);
  return {{"name", preset},
          {"family", f.name},
          {"summary", f.summary(spec)},
          {"params", c.params},
          {"macs_linear_conv", c.macs_linear_conv},
          {"flops", 2 * (c.macs_linear_conv + c.macs_attention)}};
}

void list_generic(const BackboneFamily& f, const Query& q, bool json, ordered_json& arr) {
  for (const std::string& preset : f.preset_names()) {
    const ordered_json j = generic_json(f, preset, q);
    if (json) {
      arr.push_back(j);
      continue;
    }
    const double params = j["params"].get<double>();
    std::printf("%-18s %-6s %14lld %10.3f %18.2f %12.2f\n", preset.c_str(), f.name,
                static_cast<long long>(j["params"].get<int64_t>()), params / 1e9,
                j["macs_linear_conv"].get<double>() / 1e9, j["flops"].get<double>() / 1e9);
  }
}

// Keyed by the registry's family names (null: the family has no pages of its own).
const FamilyPages* pages_of(const std::string& family) {
  static const std::map<std::string, FamilyPages> pages = {{"unet", {list_unets, describe_unet}},
                                                           {"transformer", {list_transformers, describe_transformer}}};
  const auto it = pages.find(family);
  return it == pages.end() ? nullptr : &it->second;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dtmodel: parameter counts and compute of dtrainer's backbones (analytic; no weights allocated)"};
  app.require_subcommand(1);
  app.footer(
      "Compute conventions: macs_linear_conv counts weight MACs of conv and linear layers ([S1]);\n"
      "flops = 2 x all MACs including attention products ([S2]). Counts are per sample, one forward.");

  Query q;
  bool json = false;

  CLI::App* list = app.add_subcommand("list", "one line per preset: parameters and compute");
  list->add_flag("--json", json, "print a JSON array of objects");
  add_query_options(list, q, false);
  std::string list_context;
  list->add_option("--context-dim", list_context, "text embedding width D_txt (default 1024)");

  CLI::App* describe = app.add_subcommand("describe", "exact counts, per-stage breakdown and memory of one model");
  std::string name;
  describe->add_option("name", name, "preset name (see `dtmodel list`)")->required();
  describe->add_flag("--json", json, "print one JSON object");
  add_query_options(describe, q, true);
  std::map<std::string, std::string> overrides;
  std::vector<std::string> transformer_set;
  describe->add_option(
      "--set", transformer_set, "transformer presets: field overrides KEY=VALUE (" + [] {
        std::string k;
        for (const auto& key : transformer_field_keys()) k += (k.empty() ? "" : ", ") + key;
        return k;
      }() + ")");
  CLI::Option_group* group = describe->add_option_group("Model fields", "override any field of a UNet preset");
  for (const auto& f : unet_fields()) {
    std::string flag = "--" + f.key;
    for (char& ch : flag)
      if (ch == '_') ch = '-';
    group->add_option(flag, overrides[f.key], f.help);
  }

  CLI11_PARSE(app, argc, argv);
  try {
    if (q.text_len < 1) throw Error("--text-len", "must be at least 1");
    if (q.batch < 1) throw Error("--batch", "must be at least 1");
    bytes_per_elem(q.dtype);
    if (*list) {
      ordered_json arr = ordered_json::array();
      if (!json)
        std::printf("%-18s %-6s %14s %10s %18s %12s\n", "preset", "layout", "params", "params_B", "macs_linear_conv_G",
                    "flops_G");
      for (const BackboneFamily& f : backbone_families()) {
        if (const FamilyPages* pages = pages_of(f.name))
          pages->list(q, list_context, json, arr);
        else
          list_generic(f, q, json, arr);
      }
      if (json)
        std::cout << arr.dump(2) << "\n";
      else
        std::printf("\nper sample, one forward at %lld px, %lld text tokens; `dtmodel describe NAME` for details\n",
                    static_cast<long long>(q.resolution), static_cast<long long>(q.text_len));
    } else {
      // The family that has the preset; a name no family has goes to the UNet page, whose error lists
      // the UNet presets.
      const BackboneFamily* family = &backbone_family("unet");
      for (const BackboneFamily& f : backbone_families())
        if (f.has_preset(name)) family = &f;
      if (const FamilyPages* pages = pages_of(family->name)) {
        pages->describe({name, q, json, overrides, transformer_set});
      } else {
        const ordered_json j = generic_json(*family, name, q);
        if (json)
          std::cout << j.dump(2) << "\n";
        else
          std::printf("%s\n  params %lld, macs_linear_conv %.3f G, flops %.3f G (per sample, one forward)\n",
                      j["summary"].get<std::string>().c_str(), static_cast<long long>(j["params"].get<int64_t>()),
                      j["macs_linear_conv"].get<double>() / 1e9, j["flops"].get<double>() / 1e9);
      }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "dtmodel: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
