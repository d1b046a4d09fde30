#include "dtrainer/models/clip_text_model.h"

#include <cmath>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/core/error.h"
#include "dtrainer/models/pretrained_folder.h"

namespace dtrainer::models {

namespace nn = torch::nn;
using torch::Tensor;

void CLIPTextConfig::validate(const std::string& where) const {
  auto fail = [&](const std::string& field, const std::string& what) { throw Error(where + "." + field, what); };
  if (vocab_size < 1) fail("vocab_size", "must be positive");
  if (hidden_size < 1) fail("hidden_size", "must be positive");
  if (intermediate_size < 1) fail("intermediate_size", "must be positive");
  if (num_hidden_layers < 2) fail("num_hidden_layers", "must be at least 2 (the penultimate layer must exist)");
  if (num_attention_heads < 1 || hidden_size % num_attention_heads)
    fail("num_attention_heads", "must divide hidden_size (" + std::to_string(hidden_size) + ")");
  if (max_position_embeddings < 2) fail("max_position_embeddings", "must be at least 2");
  if (hidden_act != "quick_gelu" && hidden_act != "gelu")
    fail("hidden_act", "is '" + hidden_act + "'; expected quick_gelu (OpenAI CLIP) or gelu (OpenCLIP)");
  if (!(layer_norm_eps > 0)) fail("layer_norm_eps", "must be positive");
  if (projection_dim < 0) fail("projection_dim", "must be >= 0");
  if (eos_token_id < 0 || eos_token_id >= vocab_size) fail("eos_token_id", "must be a token of the vocabulary");
}

CLIPTextConfig parse_clip_text_config(const std::string& path) {
  const nlohmann::json j = read_json_object(path);
  // A whole-CLIP config keeps the text tower's fields under text_config.
  const bool whole = j.contains("text_config") && j["text_config"].is_object();
  const nlohmann::json& t = whole ? j["text_config"] : j;
  CLIPTextConfig c;
  const ConfigFields f(t, path);
  f.integer("vocab_size", c.vocab_size);
  f.integer("hidden_size", c.hidden_size);
  f.integer("intermediate_size", c.intermediate_size);
  f.integer("num_hidden_layers", c.num_hidden_layers);
  f.integer("num_attention_heads", c.num_attention_heads);
  f.integer("max_position_embeddings", c.max_position_embeddings);
  f.integer("eos_token_id", c.eos_token_id);
  f.text("hidden_act", c.hidden_act);
  f.real("layer_norm_eps", c.layer_norm_eps);
  bool with_projection = false;
  if (const auto it = j.find("architectures"); it != j.end() && it->is_array())
    for (const auto& a : *it) with_projection |= a.is_string() && a.get<std::string>() == "CLIPTextModelWithProjection";
  if (with_projection) {
    c.projection_dim = 512;  // (transformers' default)
    f.integer("projection_dim", c.projection_dim);
    if (whole) ConfigFields(j, path).integer("projection_dim", c.projection_dim);
  }
  c.validate(path);
  return c;
}

CLIPTextConfig clip_text_preset(const std::string& name) {
  CLIPTextConfig c;
  if (name == "clip-vit-l-14") {
    c.hidden_size = 768, c.intermediate_size = 3072, c.num_hidden_layers = 12, c.num_attention_heads = 12;
  } else if (name == "open-clip-vit-h-14") {
    c.hidden_size = 1024, c.intermediate_size = 4096, c.num_hidden_layers = 24, c.num_attention_heads = 16;
    c.hidden_act = "gelu";
  } else if (name == "open-clip-vit-bigg-14") {
    c.hidden_size = 1280, c.intermediate_size = 5120, c.num_hidden_layers = 32, c.num_attention_heads = 20;
    c.hidden_act = "gelu", c.projection_dim = 1280;
  } else {
    throw Error("text encoder", "unknown CLIP text preset '" + name +
                                    "' (known: clip-vit-l-14, open-clip-vit-h-14, open-clip-vit-bigg-14)");
  }
  return c;
}

const NameTable<CLIPTextLayer>& name_table(CLIPTextLayer) {
  static const NameTable<CLIPTextLayer> t{{"last", CLIPTextLayer::kLast},
                                          {"penultimate", CLIPTextLayer::kPenultimate},
                                          {"penultimate-normed", CLIPTextLayer::kPenultimateNormed}};
  return t;
}
CLIPTextLayer parse_clip_text_layer(const std::string& field, const std::string& text) {
  return name_table(CLIPTextLayer{}).parse(field, text);
}
const char* to_string(CLIPTextLayer layer) { return name_table(layer).name(layer); }

// CLIPEncoderLayer: x + attn(LN1(x)), then + MLP(LN2(x)).
struct CLIPTextModelImpl::Block : nn::Module {
  Block(const CLIPTextConfig& c) : heads(c.num_attention_heads), quick_gelu(c.hidden_act == "quick_gelu") {
    const int64_t w = c.hidden_size;
    auto attn = register_module("self_attn", std::make_shared<nn::Module>());
    q_proj = attn->register_module("q_proj", nn::Linear(w, w));
    k_proj = attn->register_module("k_proj", nn::Linear(w, w));
    v_proj = attn->register_module("v_proj", nn::Linear(w, w));
    out_proj = attn->register_module("out_proj", nn::Linear(w, w));
    layer_norm1 = register_module("layer_norm1", nn::LayerNorm(nn::LayerNormOptions({w}).eps(c.layer_norm_eps)));
    auto mlp = register_module("mlp", std::make_shared<nn::Module>());
    fc1 = mlp->register_module("fc1", nn::Linear(w, c.intermediate_size));
    fc2 = mlp->register_module("fc2", nn::Linear(c.intermediate_size, w));
    layer_norm2 = register_module("layer_norm2", nn::LayerNorm(nn::LayerNormOptions({w}).eps(c.layer_norm_eps)));
  }
  Tensor forward(const Tensor& x, const Tensor& causal) {
    const int64_t B = x.size(0), T = x.size(1), W = x.size(2), d = W / heads;
    const Tensor h = layer_norm1(x);
    auto split = [&](const Tensor& t) { return t.view({B, T, heads, d}).transpose(1, 2); };  // [B, heads, T, d]
    const Tensor q = split(q_proj(h)), k = split(k_proj(h)), v = split(v_proj(h));
    const Tensor scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(d)) + causal;
    const Tensor a = torch::matmul(scores.softmax(-1, torch::kFloat32).to(v.scalar_type()), v);
    const Tensor y = x + out_proj(a.transpose(1, 2).reshape({B, T, W}));
    Tensor m = fc1(layer_norm2(y));
    m = quick_gelu ? m * torch::sigmoid(1.702 * m) : torch::gelu(m);
    return y + fc2(m);
  }
  int64_t heads;
  bool quick_gelu;
  nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
};

CLIPTextModelImpl::CLIPTextModelImpl(const CLIPTextConfig& c) : config_(c) {
  c.validate("text encoder");
  auto text = register_module("text_model", std::make_shared<nn::Module>());
  auto embeddings = text->register_module("embeddings", std::make_shared<nn::Module>());
  token_embedding_ = embeddings->register_module("token_embedding", nn::Embedding(c.vocab_size, c.hidden_size))->weight;
  position_embedding_ =
      embeddings->register_module("position_embedding", nn::Embedding(c.max_position_embeddings, c.hidden_size))
          ->weight;
  auto encoder = text->register_module("encoder", std::make_shared<nn::Module>());
  nn::ModuleList layers;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    blocks_.push_back(std::make_shared<Block>(c));
    layers->push_back(blocks_.back());
  }
  encoder->register_module("layers", layers);
  auto norm = text->register_module("final_layer_norm",
                                    nn::LayerNorm(nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  final_norm_weight_ = norm->weight;
  final_norm_bias_ = norm->bias;
  if (c.projection_dim > 0)
    projection_ =
        register_module("text_projection", nn::Linear(nn::LinearOptions(c.hidden_size, c.projection_dim).bias(false)))
            ->weight;
}

CLIPTextOutput CLIPTextModelImpl::forward(const Tensor& ids, CLIPTextLayer layer) {
  const CLIPTextConfig& c = config_;
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != torch::kLong || ids.size(1) < 1 ||
      ids.size(1) > c.max_position_embeddings)
    throw Error("ids", "expected int64 token ids [B, T] with 1 <= T <= " + std::to_string(c.max_position_embeddings) +
                           ", got " +
                           (ids.defined() ? c10::str(ids.sizes()) + " " + c10::toString(ids.scalar_type())
                                          : std::string("an undefined tensor")));
  if (ids.is_cpu() && ids.numel() && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c.vocab_size))
    throw Error("ids", "token ids must be in 0.." + std::to_string(c.vocab_size - 1) + " (the vocabulary)");
  const int64_t T = ids.size(1);
  Tensor x = token_embedding_.index_select(0, ids.flatten()).view({ids.size(0), T, c.hidden_size}) +
             position_embedding_.narrow(0, 0, T);
  const Tensor causal =
      torch::full({T, T}, -std::numeric_limits<float>::infinity(), x.options()).triu(1);  // (token i sees 0..i)
  // (the last block runs only where its output is read: the last layer, or the pooled projection)
  const bool need_last = layer == CLIPTextLayer::kLast || projection_.defined();
  Tensor penultimate;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (i == blocks_.size() - 1) {
      penultimate = x;
      if (!need_last) break;
    }
    x = blocks_[i]->forward(x, causal);
  }
  auto norm = [&](const Tensor& h) {
    return torch::layer_norm(h, {c.hidden_size}, final_norm_weight_, final_norm_bias_, c.layer_norm_eps);
  };
  const Tensor last = need_last ? norm(x) : Tensor();
  CLIPTextOutput out;
  out.hidden = layer == CLIPTextLayer::kLast          ? last
               : layer == CLIPTextLayer::kPenultimate ? penultimate
                                                      : norm(penultimate);
  if (projection_.defined()) {
    // The end token's final state (the first end token of each row), projected.
    const Tensor is_end = ids.eq(c.eos_token_id);
    const Tensor at = torch::where(is_end.any(1), is_end.to(torch::kInt).argmax(1), ids.argmax(1));
    out.pooled = torch::matmul(last.index({torch::arange(ids.size(0), ids.options()), at}), projection_.t());
  }
  return out;
}

CLIPTextModel load_clip_text_model(const std::string& dir, torch::ScalarType dtype) {
  const PretrainedFolder folder = find_pretrained_folder(
      dir, "model.safetensors",
      "a Hugging Face CLIP text encoder folder: config.json and model.safetensors, e.g. the 'text_encoder' folder "
      "of an SD release");
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16)
    throw Error("text encoder dtype", "expected fp32 or bf16, got " + std::string(c10::toString(dtype)));
  CLIPTextModel model(parse_clip_text_config(folder.config));
  ckpt::WeightsNaming naming;
  // A whole CLIP file also holds the vision tower, its projection and the logit scale; older text
  // files hold the position_ids buffer. None of them is a parameter of the text model.
  // A whole-CLIP file's text_projection is skipped where the text model has none.
  const bool projected = model->config().projection_dim > 0;
  naming.module_name = [projected](const std::string& name) -> std::string {
    if (name.rfind("vision_model.", 0) == 0 || name == "visual_projection.weight" || name == "logit_scale" ||
        name == "text_model.embeddings.position_ids" || (!projected && name == "text_projection.weight"))
      return "";
    return name;
  };
  ckpt::load_weights(folder.weights, *model, naming);
  model->to(dtype);
  model->eval();
  return model;
}

}  // namespace dtrainer::models
