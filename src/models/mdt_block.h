#pragma once
// MDTv2's block and side-interpolater (Gao et al. 2023; sail-sg/MDT), private to src/models: a DiT
// block (adaLN-Zero) whose self-attention adds a learned relative position bias (one table of
// (2g - 1)^2 + 3 entries per head for a g x g grid, BEiT's layout), optionally preceded by a long
// skip (Linear(2h -> h) of [x; skip]); the masked forward passes the kept tokens' indices so the
// bias is read for them.

#include "transformer_blocks.h"

namespace dtrainer::models::transformer_detail {

struct RelPosAttention : nn::Module {
  nn::Linear qkv{nullptr}, proj{nullptr};
  Tensor relative_position_bias_table, index;  // [(2g-1)^2 + 3, H]; [N, N] int64 (a buffer)
  int64_t H;
  RelPosAttention(int64_t h, int64_t heads, int64_t grid) : H(heads) {
    qkv = register_module("qkv", linear(h, 3 * h));
    proj = register_module("proj", linear(h, h));
    relative_position_bias_table = register_parameter(
        "relative_position_bias_table", torch::randn({(2 * grid - 1) * (2 * grid - 1) + 3, heads}) * 0.02);
    // index[a][b] = (row_a - row_b + g - 1) (2g - 1) + (col_a - col_b + g - 1)
    const torch::Tensor r = torch::arange(grid).repeat_interleave(grid), c = torch::arange(grid).repeat(grid);
    index = register_buffer("relative_position_index", (r.unsqueeze(1) - r.unsqueeze(0) + grid - 1) * (2 * grid - 1) +
                                                           (c.unsqueeze(1) - c.unsqueeze(0) + grid - 1));
  }
  // x [B, n, h]; keep [B, n] the tokens' grid indices (undefined: all N in order).
  Tensor forward(const Tensor& x, const Tensor& keep) {
    auto parts = qkv(x).chunk(3, -1);
    const Tensor q = heads(parts[0], H), k = heads(parts[1], H), v = heads(parts[2], H);
    const Tensor idx = keep.defined() ? index.index({keep.unsqueeze(2), keep.unsqueeze(1)}) : index.unsqueeze(0);
    const Tensor bias = relative_position_bias_table.index_select(0, idx.flatten())
                            .view({idx.size(0), idx.size(1), idx.size(2), H})
                            .permute({0, 3, 1, 2});  // [B or 1, H, n, n]
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    const Tensor w = (torch::matmul(q, k.transpose(-2, -1)) * scale + bias.to(q.dtype())).softmax(-1);
    return proj(merge_heads(torch::matmul(w, v)));
  }
};

struct MDTBlock : nn::Module {
  std::shared_ptr<RelPosAttention> attn;
  std::shared_ptr<Mlp> mlp;
  nn::Sequential adaLN_modulation{nullptr};
  nn::Linear skip_linear{nullptr};
  MDTBlock(const TransformerSpec& s, bool skip) {
    const int64_t h = s.hidden_size;
    attn = register_module("attn", std::make_shared<RelPosAttention>(h, s.num_heads, s.sample_size / s.patch_size));
    mlp = register_module("mlp", std::make_shared<Mlp>(h, s.mlp_ratio * h));
    adaLN_modulation = register_module("adaLN_modulation", silu_linear(h, 6 * h, /*zero=*/true));
    if (skip) skip_linear = register_module("skip_linear", linear(2 * h, h));
  }
  // x [B, n, h], c [B, h], skip [B, n, h] (blocks with a long skip), keep as RelPosAttention's.
  Tensor forward(const Tensor& x_in, const Tensor& c, const Tensor& skip, const Tensor& keep) {
    const Tensor x = skip_linear ? skip_linear(torch::cat({x_in, skip}, -1)) : x_in;
    const auto m = adaLN_modulation->forward(c).chunk(6, -1);
    const Tensor a = x + m[2].unsqueeze(1) * attn->forward(modulate(layer_norm(x), m[0], m[1]), keep);
    return a + m[5].unsqueeze(1) * mlp->forward(modulate(layer_norm(a), m[3], m[4]));
  }
};

// The side-interpolater with the decoder's positional embedding: the encoder's kept tokens back at
// their places, the mask token at the hidden ones, plus decoder_pos_embed; one block predicts the
// hidden tokens, and the kept ones pass through it unchanged (MDTv2's masked shortcut). Without a
// mask only decoder_pos_embed is added.
struct SideInterpolater : nn::Module {
  Tensor mask_token, decoder_pos_embed;
  std::shared_ptr<MDTBlock> block;
  SideInterpolater(const TransformerSpec& s) {
    const int64_t h = s.hidden_size, g = s.sample_size / s.patch_size;
    mask_token = register_parameter("mask_token", torch::randn({1, 1, h}) * 0.02);
    decoder_pos_embed = register_parameter("decoder_pos_embed",
                                           sincos_pos_embed_2d(h, g, g, 1.0, PosEmbedGrid::kExtrapolate).unsqueeze(0));
    block = register_module("block", std::make_shared<MDTBlock>(s, false));
  }
  Tensor forward(const Tensor& x, const Tensor& c, const Tensor& keep) {
    if (!keep.defined()) return x + decoder_pos_embed;
    const int64_t B = x.size(0), N = decoder_pos_embed.size(1), h = x.size(2);
    const Tensor where = keep.unsqueeze(-1).expand({B, keep.size(1), h});
    const Tensor full = mask_token.expand({B, N, h}).scatter(1, where, x) + decoder_pos_embed;
    const Tensor hidden = torch::ones({B, N, 1}, x.options()).scatter(1, keep.unsqueeze(-1), 0.0);
    return block->forward(full, c, Tensor(), Tensor()) * hidden + full * (1 - hidden);
  }
};

}  // namespace dtrainer::models::transformer_detail
