#include "dtrainer/models/transformer_cost.h"

#include "dtrainer/models/control_counts.h"

namespace dtrainer::models {
namespace {

// Builds the table in the module's registration order and tallies MACs as it goes.
struct Counter {
  TransformerCost c;
  void param(const std::string& name, std::vector<int64_t> shape) { c.params.push_back({name, std::move(shape)}); }
  // A linear layer applied to `rows` vectors (tokens; 1 for per-sample vectors).
  void linear(const std::string& name, int64_t in, int64_t out, int64_t rows, bool bias = true) {
    param(name + ".weight", {out, in});
    if (bias) param(name + ".bias", {out});
    c.total.macs_linear_conv += rows * in * out;
    c.total.activation_elems += rows * out;
  }
  void attention(int64_t queries, int64_t keys, int64_t width, int64_t heads) {
    c.total.macs_attention += 2 * queries * keys * width;
    c.total.activation_elems += heads * queries * keys + queries * width;
  }
};

}  // namespace

TransformerCost count_transformer(const TransformerSpec& s, int64_t text_len) {
  s.validate();
  const int64_t T = s.family == TransformerFamily::kPixArt || s.family == TransformerFamily::kAttDiT
                        ? s.context_tokens(text_len)
                        : text_len;
  Counter k;
  const int64_t h = s.hidden_size, p = s.patch_size, N = s.tokens(), D = s.context_dim, m = s.mlp_ratio * h;
  const int64_t out = p * p * s.out_channels(), H = s.num_heads;
  const bool mm = s.family == TransformerFamily::kMMDiT || s.family == TransformerFamily::kMMDiTPP;

  // Patch embedding: a p x p stride-p convolution.
  k.param("x_embedder.proj.weight", {h, s.in_channels, p, p});
  k.param("x_embedder.proj.bias", {h});
  k.c.total.macs_linear_conv += N * s.in_channels * p * p * h;
  k.c.total.activation_elems += N * h;
  if (s.family == TransformerFamily::kMDT) k.param("x_embedder.pos_embed", {1, N, h});  // learned (MDTv2)
  k.linear("t_embedder.mlp.0", s.frequency_dim, h, 1);
  k.linear("t_embedder.mlp.2", h, h, 1);
  switch (s.family) {
    case TransformerFamily::kDiT:
    case TransformerFamily::kMDT:
      if (s.conditioning == "class")
        k.param("y_embedder.embedding_table.weight", {s.num_classes + 1, h});
      else
        k.linear("y_embedder.proj", D, h, 1);  // pooled (masked mean) text tokens
      break;
    case TransformerFamily::kPixArt:
    case TransformerFamily::kAttDiT:
      if (s.family == TransformerFamily::kPixArt) k.linear("t_block.1", h, 6 * h, 1);
      if (s.conditioning == "class") k.param("y_embedder.embedding_table.weight", {s.num_classes + 1, h});
      if (s.has_caption_mlp()) {
        k.linear("y_embedder.y_proj.fc1", s.caption_in(), h, T);
        k.linear("y_embedder.y_proj.fc2", h, h, T);
      }
      break;
    case TransformerFamily::kMMDiT:
    case TransformerFamily::kMMDiTPP:
      if (s.conditioning == "class") {
        k.param("y_embedder.embedding_table.weight", {s.num_classes + 1, h});
        break;
      }
      k.linear("context_embedder", D, h, T);
      if (s.family == TransformerFamily::kMMDiT) {
        k.linear("y_embedder.mlp.0", D, h, 1);
        k.linear("y_embedder.mlp.2", h, h, 1);
      } else {  // [S2] control embedding (models/control_embedding.h) into the adaLN vector
        const int64_t fd = s.control_feature_dim;
        k.linear("control_embedding.high.linear_1", kHighLevelControls * fd, h, 1);
        k.linear("control_embedding.high.linear_2", h, h, 1);
        k.linear("control_embedding.low.linear_1", kLowLevelControls * fd, h, 1);
        k.linear("control_embedding.low.linear_2", h, h, 1);
      }
      break;
  }
  if (s.family == TransformerFamily::kMDT) {  // MDTv2 (unmasked forward): encoder in / out, side, decoder
    const int64_t g = s.sample_size / p, table = (2 * g - 1) * (2 * g - 1) + 3;
    auto block = [&](const std::string& b, bool skip) {
      k.linear(b + "attn.qkv", h, 3 * h, N);
      k.attention(N, N, h, H);
      k.linear(b + "attn.proj", h, h, N);
      k.param(b + "attn.relative_position_bias_table", {table, H});
      k.linear(b + "mlp.fc1", h, m, N);
      k.linear(b + "mlp.fc2", m, h, N);
      k.linear(b + "adaLN_modulation.1", h, 6 * h, 1);
      if (skip) k.linear(b + "skip_linear", 2 * h, h, N);
    };
    const int64_t half = s.mdt_half_depth();
    for (int64_t i = 0; i < half; ++i) block("en_inblocks." + std::to_string(i) + ".", false);
    for (int64_t i = 0; i < half; ++i) block("en_outblocks." + std::to_string(i) + ".", true);
    k.param("side_interpolater.mask_token", {1, 1, h});
    k.param("side_interpolater.decoder_pos_embed", {1, N, h});
    const OpCount before = k.c.total;
    block("side_interpolater.block.", false);
    k.c.total = before;  // (the side block runs in the masked forward only)
    for (int64_t i = 0; i < s.decode_layer; ++i) block("de_blocks." + std::to_string(i) + ".", true);
  }
  for (int64_t i = 0; i < s.depth && s.family != TransformerFamily::kMDT; ++i) {
    if (!mm) {
      const std::string b = "blocks." + std::to_string(i) + ".";
      k.linear(b + "attn.qkv", h, 3 * h, N);
      k.attention(N, N, h, H);
      k.linear(b + "attn.proj", h, h, N);
      if (s.family == TransformerFamily::kPixArt ||
          (s.family == TransformerFamily::kAttDiT && s.conditioning == "text")) {
        k.linear(b + "cross_attn.q_linear", h, h, N);
        k.linear(b + "cross_attn.kv_linear", h, 2 * h, T);
        k.attention(N, T, h, H);
        k.linear(b + "cross_attn.proj", h, h, N);
        if (s.family == TransformerFamily::kAttDiT) {  // RMSNorm on q and k ([S2])
          k.param(b + "cross_attn.ln_q.weight", {s.head_dim()});
          k.param(b + "cross_attn.ln_k.weight", {s.head_dim()});
        }
      }
      k.linear(b + "mlp.fc1", h, m, N);
      k.linear(b + "mlp.fc2", m, h, N);
      if (s.family == TransformerFamily::kDiT)
        k.linear(b + "adaLN_modulation.1", h, 6 * h, 1);
      else if (s.family == TransformerFamily::kAttDiT)
        k.linear(b + "adaLN_modulation.1", h, 9 * h, 1);
      else
        k.param(b + "scale_shift_table", {6, h});
    } else {
      const std::string b = "joint_blocks." + std::to_string(i) + ".";
      const bool last = i == s.depth - 1;  // SD3: the text stream of the last block only feeds attention
      const bool text = s.conditioning == "text", shared = s.context_stream == "shared";
      const int64_t Tj = text ? T : 0;  // (class-conditional: image tokens only)
      for (const char* stream : {"context_block.", "x_block."}) {
        const bool ctx = stream[0] == 'c';
        if (ctx && !text) continue;
        const int64_t rows = ctx ? T : N;
        const bool pre_only = ctx && last;
        const bool own = !(ctx && shared);  // a shared text stream: qkv and norms only...
        const std::string sb = b + stream;
        if (own) k.linear(sb + "adaLN_modulation.1", h, (pre_only ? 2 : 6) * h, 1);
        k.linear(sb + "attn.qkv", h, 3 * h, rows);
        k.param(sb + "attn.ln_q.weight", {s.head_dim()});
        k.param(sb + "attn.ln_k.weight", {s.head_dim()});
        if (!pre_only) {
          const std::string pb = own ? sb : b + "x_block.";  // ...the image stream's proj and MLP, run on its tokens
          if (own) {
            k.linear(sb + "attn.proj", h, h, rows);
            k.linear(sb + "mlp.fc1", h, m, rows);
            k.linear(sb + "mlp.fc2", m, h, rows);
          } else {
            k.c.total.macs_linear_conv += rows * (h * h + 2 * h * m);
            k.c.total.activation_elems += rows * (2 * h + m);
          }
        }
      }
      k.attention(N + Tj, N + Tj, h, H);
    }
  }
  k.linear("final_layer.linear", h, out, N);
  if (s.family == TransformerFamily::kPixArt)
    k.param("final_layer.scale_shift_table", {2, h});
  else
    k.linear("final_layer.adaLN_modulation.1", h, 2 * h, 1);
  if (s.masked_training()) {  // the masked pass: the encoder on the kept tokens, the side block and the decoder on all
    const int64_t n = static_cast<int64_t>(static_cast<double>(N) * (1.0 - (s.mask_ratio + 0.1)));
    const int64_t enc = 2 * s.mdt_half_depth(), skips = s.mdt_half_depth();
    auto block_macs = [&](int64_t tokens, bool skip) {
      return tokens * (12 * h * h + (skip ? 2 * h * h : 0)) + 2 * tokens * tokens * h;  // (+ adaLN, per sample)
    };
    int64_t macs = (enc - skips) * block_macs(n, false) + skips * block_macs(n, true) + block_macs(N, false) +
                   s.decode_layer * block_macs(N, true) + (enc + 1 + s.decode_layer) * 6 * h * h;
    macs += N * s.in_channels * p * p * h + N * h * out + 2 * h * h;  // patch embedding, final layer
    k.c.training_extra.macs_linear_conv = macs;
  }
  for (const auto& e : k.c.params) k.c.num_params += e.numel();
  return k.c;
}

}  // namespace dtrainer::models
