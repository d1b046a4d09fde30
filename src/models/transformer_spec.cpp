#include "dtrainer/models/transformer_spec.h"

#include "dtrainer/core/error.h"
#include "dtrainer/core/parse.h"

namespace dtrainer::models {

const NameTable<TransformerFamily>& name_table(TransformerFamily) {
  static const NameTable<TransformerFamily> t{
      {"dit", TransformerFamily::kDiT},        {"pixart", TransformerFamily::kPixArt},
      {"mmdit", TransformerFamily::kMMDiT},    {"mmdit_pp", TransformerFamily::kMMDiTPP},
      {"att_dit", TransformerFamily::kAttDiT}, {"mdt", TransformerFamily::kMDT}};
  return t;
}
const char* to_string(TransformerFamily f) { return name_table(f).name(f); }
TransformerFamily parse_transformer_family(const std::string& field, const std::string& text) {
  return name_table(TransformerFamily{}).parse(field, text);
}

void TransformerSpec::validate() const {
  auto positive = [](const char* f, int64_t v) {
    if (v <= 0) throw Error(std::string("model.") + f, "must be positive, got " + std::to_string(v));
  };
  positive("patch_size", patch_size);
  positive("hidden_size", hidden_size);
  positive("depth", depth);
  positive("num_heads", num_heads);
  positive("mlp_ratio", mlp_ratio);
  positive("context_dim", context_dim);
  positive("in_channels", in_channels);
  positive("sample_size", sample_size);
  if (hidden_size % num_heads)
    throw Error("model.num_heads", "hidden_size " + std::to_string(hidden_size) + " is not divisible by " +
                                       std::to_string(num_heads) + " heads");
  if (hidden_size % 4) throw Error("model.hidden_size", "must be divisible by 4 (2-D sin-cos positional embedding)");
  if (sample_size % patch_size)
    throw Error("model.sample_size",
                std::to_string(sample_size) + " is not divisible by patch_size " + std::to_string(patch_size));
  if (frequency_dim % 2) throw Error("model.frequency_dim", "must be even");
  if (conditioning != "class" && conditioning != "text")
    throw Error("model.conditioning", "class or text, got '" + conditioning + "'");
  if (family == TransformerFamily::kMMDiTPP && conditioning != "text")
    throw Error("model.conditioning", "mmdit_pp is text-conditional (its text enters through attention only)");
  if (family == TransformerFamily::kMDT) {
    if (decode_layer < 0 || decode_layer >= depth || (depth - decode_layer) % 2)
      throw Error("model.decode_layer",
                  "needs 0 <= decode_layer < depth with depth - decode_layer even (an encoder "
                  "of two halves), got " +
                      std::to_string(decode_layer) + " of depth " + std::to_string(depth));
    if (!(mask_ratio >= 0 && mask_ratio + 0.2 < 1))
      throw Error("model.mask_ratio", "needs 0 <= mask_ratio < 0.8 (up to mask_ratio + 0.2 of the tokens are hidden)");
  }
  if (context_stream != "full" && context_stream != "shared")
    throw Error("model.context_stream", "full or shared, got '" + context_stream + "'");
  if (context_stream == "shared" && family != TransformerFamily::kMMDiT && family != TransformerFamily::kMMDiTPP)
    throw Error("model.context_stream", "only the mmDiT families have a text stream");
  if (!(pos_embed_scale > 0)) throw Error("model.pos_embed_scale", "must be positive");
  if (pos_embed_grid != "resampled" && pos_embed_grid != "extrapolate" && pos_embed_grid != "interpolated")
    throw Error("model.pos_embed_grid", "resampled, interpolated or extrapolate, got '" + pos_embed_grid + "'");
  if ((family == TransformerFamily::kPixArt || family == TransformerFamily::kAttDiT) && caption_mlp == 0 &&
      conditioning == "text" && context_dim != hidden_size)
    throw Error("model.caption_mlp", "0 needs context_dim == hidden_size (the text enters cross-attention as is)");
}

namespace {
TransformerSpec make(const std::string& name, TransformerFamily f, int64_t hidden, int64_t depth, int64_t caption_mlp,
                     const std::string& conditioning = "text", const std::string& context_stream = "full") {
  TransformerSpec s;
  s.name = name;
  s.family = f;
  s.hidden_size = hidden;
  s.depth = depth;
  s.caption_mlp = caption_mlp;
  s.conditioning = conditioning;
  s.context_stream = context_stream;
  if (f == TransformerFamily::kMMDiT || f == TransformerFamily::kMMDiTPP)
    s.learn_sigma = false;  // SD3 predicts the target only
  return s;
}
}  // namespace

const std::vector<TransformerSpec>& transformer_presets() {
  static const std::vector<TransformerSpec> presets = {
      make("dit-xl2", TransformerFamily::kDiT, 1152, 28, -1, "class"),
      make("pixart-h1152-d28", TransformerFamily::kPixArt, 1152, 28, 1),  // [S1] Table 2: caption MLP
      make("pixart-h1536-d28", TransformerFamily::kPixArt, 1536, 28, 1),
      make("pixart-h1024-d28", TransformerFamily::kPixArt, 1024, 28, 0),  // no caption MLP (D_txt == hidden)
      make("pixart-h1024-d56", TransformerFamily::kPixArt, 1024, 56, 0),
      make("mmdit-xl2", TransformerFamily::kMMDiT, 1152, 28, -1),
      make("mmdit-pp-xl2", TransformerFamily::kMMDiTPP, 1152, 28, -1),
      // [S2] Table A1, the models it compares (docs/MODELS.md "[S2]'s model table": the counts, and
      // how each configuration was reconstructed from them). CC12M text conditioning:
      make("s2-pixart-xl2", TransformerFamily::kPixArt, 1152, 28, 1),
      make("s2-mmdit-xl2", TransformerFamily::kMMDiT, 1152, 28, -1, "text", "shared"),
      // [S2]'s own model at that size: s2-mmdit-xl2 with its control conditioning (jobs/s2-mmdit-pp-*.toml).
      make("s2-mmdit-pp-xl2", TransformerFamily::kMMDiTPP, 1152, 28, -1, "text", "shared"),
      // ...and ImageNet class conditioning:
      make("s2-mmdit-xl2-class", TransformerFamily::kMMDiT, 1152, 28, -1, "class"),
      make("s2-dit-xl2-class", TransformerFamily::kDiT, 1152, 28, -1, "class"),
      // Att-DiT-XL/2 on CC12M (940.49 M): DiT with cross-attention to the (caption-MLP'd) text.
      make("s2-att-dit-xl2", TransformerFamily::kAttDiT, 1152, 28, 1),
      // mDT-v2-XL/2 on ImageNet (748.07 M): MDTv2's XL/2, 4 decoder blocks, mask ratio 0.3.
      make("s2-mdt-v2-xl2-class", TransformerFamily::kMDT, 1152, 28, -1, "class"),
      make("s2-pixart-xl2-class", TransformerFamily::kPixArt, 1152, 28, -1, "class"),
      make("s2-att-dit-xl2-class", TransformerFamily::kAttDiT, 1152, 28, -1, "class"),
  };
  return presets;
}

bool is_transformer_preset(const std::string& name) {
  for (const auto& p : transformer_presets())
    if (p.name == name) return true;
  return false;
}

TransformerSpec transformer_preset(const std::string& name) {
  for (const auto& p : transformer_presets())
    if (p.name == name) return p;
  throw Error("model", "unknown transformer preset '" + name + "'");
}

std::vector<std::string> transformer_field_keys() {
  return {"family",      "patch_size",      "hidden_size",    "depth",          "num_heads",    "mlp_ratio",
          "context_dim", "in_channels",     "learn_sigma",    "sample_size",    "conditioning", "num_classes",
          "caption_mlp", "pos_embed_scale", "pos_embed_grid", "context_stream", "decode_layer", "mask_ratio"};
}

namespace {
double number(const std::string& field, const std::string& v) {
  try {
    return std::stod(v);
  } catch (const std::exception&) {
    throw Error(field, "not a number: '" + v + "'");
  }
}
}  // namespace

void set_transformer_field(TransformerSpec& s, const std::string& key, const std::string& v) {
  const std::string f = "model." + key;
  if (key == "family")
    s.family = parse_transformer_family(f, v);
  else if (key == "patch_size")
    s.patch_size = parse_int(f, v);
  else if (key == "hidden_size")
    s.hidden_size = parse_int(f, v);
  else if (key == "depth")
    s.depth = parse_int(f, v);
  else if (key == "num_heads")
    s.num_heads = parse_int(f, v);
  else if (key == "mlp_ratio")
    s.mlp_ratio = parse_int(f, v);
  else if (key == "context_dim")
    s.context_dim = parse_int(f, v);
  else if (key == "in_channels" || key == "out_channels")
    s.in_channels = parse_int(f, v);  // out follows in
  else if (key == "learn_sigma")
    s.learn_sigma = parse_bool(f, v);
  else if (key == "sample_size")
    s.sample_size = parse_int(f, v);
  else if (key == "conditioning")
    s.conditioning = v;
  else if (key == "num_classes")
    s.num_classes = parse_int(f, v);
  else if (key == "caption_mlp")
    s.caption_mlp = parse_int(f, v);
  else if (key == "pos_embed_scale")
    s.pos_embed_scale = number(f, v);
  else if (key == "pos_embed_grid")
    s.pos_embed_grid = v;
  else if (key == "context_stream")
    s.context_stream = v;
  else if (key == "decode_layer")
    s.decode_layer = parse_int(f, v);
  else if (key == "mask_ratio")
    s.mask_ratio = number(f, v);
  else {
    std::string known;
    for (const auto& k : transformer_field_keys()) known += (known.empty() ? "" : ", ") + k;
    throw Error(f, "unknown transformer field (known: " + known + ")");
  }
}

}  // namespace dtrainer::models
