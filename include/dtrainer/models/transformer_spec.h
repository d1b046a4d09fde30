#pragma once
// The transformer family (SPEC §2.2): DiT, PixArt-α, mmDiT (SD3) and [S2]'s mmDiT++, one spec for
// all four, on p x p latent patches. Plain data, no torch; presets in transformer_presets().

#include <cstdint>
#include <string>
#include <vector>

#include "dtrainer/core/name_table.h"

namespace dtrainer::models {

enum class TransformerFamily {
  kDiT,      // adaLN-Zero blocks; class or pooled-text conditioning through the adaLN vector
  kPixArt,   // DiT + cross-attention to the text tokens; adaLN-single; caption MLP unless D_txt == hidden
  kMMDiT,    // two streams (image, text) with their own weights, joint attention, RMSNorm on q and k,
             // timestep + pooled-text adaLN
  kMMDiTPP,  // [S2]: mmDiT + control conditioning; text only through attention (no pooled text)
  kAttDiT,   // [S2]'s Att-DiT: DiT (adaLN-Zero) + a cross-attention sublayer to the text tokens with RMSNorm
             // on q and k (what [S2] needed for stability), gated by its own adaLN shift / scale / gate
  kMDT,      // MDTv2 (Gao et al. 2023): DiT blocks with relative position bias in a long-skip encoder, a
             // side-interpolater restoring masked tokens, and a decoder; trained on masked and whole inputs
};
const NameTable<TransformerFamily>& name_table(TransformerFamily);  // dit | pixart | mmdit | mmdit_pp | att_dit | mdt
const char* to_string(TransformerFamily f);
TransformerFamily parse_transformer_family(const std::string& field, const std::string& text);

struct TransformerSpec {
  std::string name = "custom";
  TransformerFamily family = TransformerFamily::kDiT;
  int64_t patch_size = 2;
  int64_t hidden_size = 1152;
  int64_t depth = 28;
  int64_t num_heads = 16;
  int64_t mlp_ratio = 4;
  int64_t context_dim = 1024;  // D_txt of the text tokens
  int64_t in_channels = 4;
  bool learn_sigma = true;            // DiT / PixArt predict a variance too: out = 2 x in (only eps is trained)
  int64_t sample_size = 32;           // latent H = W the model is built for
  int64_t frequency_dim = 256;        // sinusoidal timestep features
  std::string conditioning = "text";  // DiT, mmDiT: "class" (num_classes + 1 null) or "text"
  int64_t num_classes = 1000;
  int64_t caption_mlp = -1;  // PixArt, Att-DiT: 1 = caption MLP, 0 = none, -1 = auto (only when D_txt != hidden)
  int64_t control_feature_dim = 256;         // mmDiT++: sinusoidal features per control scalar
  double pos_embed_scale = 1.0;              // grid size / training grid size ([S2] resolution transfer)
  std::string pos_embed_grid = "resampled";  // resampled ([S2]) | interpolated | extrapolate
  // mmDiT: the text stream's own weights. full (SD3): adaLN, QKV, projection and MLP of its own;
  // shared ([S2] Table A1's mmDiT-XL/2, reconstructed from its count: docs/MODELS.md): its own QKV
  // (and q/k RMSNorm), the image stream's adaLN modulation, projection and MLP.
  std::string context_stream = "full";
  // MDT: the decoder's blocks (the encoder has the rest, half with long skips) and the training mask:
  // a fraction mask_ratio + U(0, 0.2) of the image tokens is hidden from the encoder (0: no masking).
  int64_t decode_layer = 4;
  double mask_ratio = 0.3;

  int64_t out_channels() const { return learn_sigma ? 2 * in_channels : in_channels; }
  int64_t head_dim() const { return hidden_size / num_heads; }
  int64_t tokens() const { return (sample_size / patch_size) * (sample_size / patch_size); }
  // PixArt / Att-DiT: the caption MLP maps the text tokens (or, class-conditional, the class embedding:
  // caption_in) into the blocks' width. A class-conditional PixArt has it unless caption_mlp = 0; an
  // Att-DiT's class token needs none.
  int64_t caption_in() const { return conditioning == "class" ? hidden_size : context_dim; }
  bool has_caption_mlp() const {
    if (conditioning == "class") return family == TransformerFamily::kPixArt && caption_mlp != 0;
    return caption_mlp < 0 ? context_dim != hidden_size : caption_mlp == 1;
  }
  // Tokens a cross-attention reads: the text's, or the one class token of a class-conditional PixArt / Att-DiT.
  int64_t context_tokens(int64_t text_len) const { return conditioning == "class" ? 1 : text_len; }
  bool control_conditioning() const { return family == TransformerFamily::kMMDiTPP; }
  bool masked_training() const { return family == TransformerFamily::kMDT && mask_ratio > 0; }
  int64_t mdt_half_depth() const { return (depth - decode_layer) / 2; }  // MDT: encoder blocks with / without skips
  // Throws Error naming "model.<field>" on any inconsistency.
  void validate() const;
};

const std::vector<TransformerSpec>& transformer_presets();
bool is_transformer_preset(const std::string& name);
TransformerSpec transformer_preset(const std::string& name);
// Keys: family, patch_size, hidden_size, depth, num_heads, mlp_ratio, context_dim, in_channels,
// learn_sigma, sample_size, conditioning, num_classes, caption_mlp, pos_embed_scale, pos_embed_grid,
// context_stream, decode_layer, mask_ratio.
std::vector<std::string> transformer_field_keys();
void set_transformer_field(TransformerSpec& spec, const std::string& key, const std::string& value);

}  // namespace dtrainer::models
