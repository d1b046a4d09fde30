// The transformer backbones: preset counts against [S1] Table 2 and the DiT paper, the built
// module against the analytic parameter table, forward/backward of small overrides of every
// family, adaLN-Zero blocks starting as the identity, joint attention equal to attention over the
// explicit concatenation, the attention fallback against a second implementation, and the
// positional-embedding resampling at another resolution.
#include <catch2/catch.hpp>

#include <map>
#include <set>

#include <torch/torch.h>

#include "dtrainer/core/error.h"

#include "dtrainer/models/embeddings.h"
#include "dtrainer/models/attention.h"
#include "dtrainer/models/transformer.h"
#include "dtrainer/models/token_mask.h"
#include "dtrainer/models/transformer_cost.h"
#include "dtrainer/models/checkpointed_unit.h"

using namespace dtrainer;
using namespace dtrainer::models;

namespace {

TransformerSpec small(const std::string& preset) {
  TransformerSpec s = transformer_preset(preset);
  s.hidden_size = 32;
  s.depth = 2;
  s.num_heads = 4;
  s.context_dim = 24;
  s.sample_size = 8;
  s.frequency_dim = 16;
  s.control_feature_dim = 8;
  if (s.conditioning == "class") s.num_classes = 10;
  if (s.family == TransformerFamily::kMDT) {  // encoder 2 + 2 blocks, side-interpolater, decoder 2
    s.depth = 6;
    s.decode_layer = 2;
  }
  return s;
}

// Records every unit's inputs and first output (the image tokens of the embedding unit).
struct RecordingRunner : UnitRunner {
  std::vector<std::pair<std::vector<torch::Tensor>, torch::Tensor>> calls;
  std::vector<torch::Tensor> run(size_t, const Fn& fn, const std::vector<torch::Tensor>& inputs) override {
    std::vector<torch::Tensor> out = fn(inputs);
    calls.emplace_back(inputs, out.at(0));
    return out;
  }
};

// Runs every unit checkpointed (forward without a graph, recomputed in backward), as zero3 and
// activation checkpointing do.
struct CheckpointingRunner : UnitRunner {
  std::vector<torch::Tensor> run(size_t index, const Fn& fn, const std::vector<torch::Tensor>& inputs) override {
    return run_checkpointed(index, fn, inputs, nullptr);
  }
};

}  // namespace

TEST_CASE("a checkpointed transformer has the plain one's output and gradients, for every family") {
  // (the embedding unit returns several tensors, some units get an absent mask or t0: all of it
  // goes through the recomputation)
  for (const std::string preset :
       {"dit-xl2", "pixart-h1152-d28", "mmdit-xl2", "mmdit-pp-xl2", "s2-att-dit-xl2", "s2-mdt-v2-xl2-class"}) {
    for (const bool masked : {true, false}) {
      INFO(preset << (masked ? ", masked text" : ", no mask"));
      TransformerSpec s = small(preset);
      if (s.conditioning == "class") s.conditioning = "text";
      torch::manual_seed(21);
      DiffusionTransformer plain(s);
      torch::manual_seed(21);
      DiffusionTransformer ckpt(s);
      {
        torch::NoGradGuard g;  // (off zero, so that every parameter gets a gradient)
        auto pb = ckpt->parameters();
        auto pa = plain->parameters();
        for (size_t i = 0; i < pa.size(); ++i) {
          pa[i].add_(torch::randn_like(pa[i]) * 0.02);
          pb[i].copy_(pa[i]);
        }
      }
      CheckpointingRunner runner;
      ckpt->set_unit_runner(&runner);
      const int64_t B = 2, T = 5;
      torch::manual_seed(22);
      const torch::Tensor x = torch::randn({B, s.in_channels, 8, 8}), t = torch::tensor({3.0f, 900.0f});
      const torch::Tensor text = torch::randn({B, T, s.context_dim});
      const torch::Tensor mask =
          masked ? torch::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}).view({B, T}).to(torch::kBool) : torch::Tensor();
      ControlInputs controls{torch::rand({B, 4}), torch::rand({B, 2}) * 256, torch::rand({B}),
                             torch::ones({B}, torch::kBool)};
      const ControlInputs* c = s.family == TransformerFamily::kMMDiTPP ? &controls : nullptr;
      const torch::Tensor xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
      // (MDT: its masked forward, which every parameter takes part in)
      const torch::Tensor keep =
          s.family == TransformerFamily::kMDT ? kept_tokens(0, 1, {0, 1}, 16, 0.3) : torch::Tensor();
      const torch::Tensor ya = plain->forward_all(xa, t, text, mask, c, {}, keep);
      const torch::Tensor yb = ckpt->forward_all(xb, t, text, mask, c, {}, keep);
      CHECK(torch::equal(ya, yb));
      const torch::Tensor w = torch::randn_like(ya);
      (ya * w).sum().backward();
      (yb * w).sum().backward();
      CHECK(torch::allclose(xa.grad(), xb.grad(), 1e-5, 1e-6));
      auto pb = ckpt->named_parameters();
      for (const auto& p : plain->named_parameters()) {
        INFO(p.key());
        REQUIRE(pb[p.key()].grad().defined());
        CHECK(torch::allclose(p.value().grad(), pb[p.key()].grad(), 1e-4, 1e-6));
      }
    }
  }
}

TEST_CASE("preset parameter counts match [S1] Table 2 and DiT-XL/2 (within 2%)") {
  // [S1] Table 2: 256 px, 77 x 1024 text tokens.
  const std::map<std::string, double> s1 = {{"pixart-h1152-d28", 0.61e9},
                                            {"pixart-h1536-d28", 1.08e9},
                                            {"pixart-h1024-d28", 0.48e9},
                                            {"pixart-h1024-d56", 0.95e9}};
  for (const auto& [name, want] : s1) {
    INFO(name);
    const TransformerCost c = count_transformer(transformer_preset(name), 77);
    CHECK(std::abs(static_cast<double>(c.num_params) / want - 1) < 0.02);
  }
  CHECK(transformer_preset("pixart-h1152-d28").has_caption_mlp());
  CHECK_FALSE(transformer_preset("pixart-h1024-d28").has_caption_mlp());
  // DiT-XL/2, class-conditional: 675M parameters, 118.6 GFLOPs (the paper counts multiply-adds,
  // attention products included).
  const TransformerCost dit = count_transformer(transformer_preset("dit-xl2"), 0);
  CHECK(std::abs(static_cast<double>(dit.num_params) / 675e6 - 1) < 0.02);
  const double macs = static_cast<double>(dit.total.macs_linear_conv + dit.total.macs_attention);
  CHECK(std::abs(macs / 118.6e9 - 1) < 0.02);
}

TEST_CASE("[S2] Table A1's transformers: the presets match its parameter counts within 1%") {
  // [S2] Table A1 (millions): CC12M text conditioning (77 x 1024 tokens) and ImageNet classes.
  const std::map<std::string, double> table = {{"s2-pixart-xl2", 610.12},      {"s2-mmdit-xl2", 791.64},
                                               {"s2-mmdit-xl2-class", 679.09}, {"s2-dit-xl2-class", 679.09},
                                               {"s2-att-dit-xl2", 940.49},     {"s2-mdt-v2-xl2-class", 748.07},
                                               {"s2-pixart-xl2-class", 611.7}, {"s2-att-dit-xl2-class", 792.44}};
  for (const auto& [name, millions] : table) {
    const TransformerSpec s = transformer_preset(name);
    const TransformerCost c = count_transformer(s, s.conditioning == "class" ? 0 : 77);
    INFO(name << ": " << c.num_params);
    CHECK(std::abs(static_cast<double>(c.num_params) / (millions * 1e6) - 1) < 0.01);
  }
  // The reconstruction of [S2]'s mmDiT-XL/2: a text stream of its own QKV only. Against SD3's full
  // second stream it drops, per block, adaLN (6h^2 + 6h), projection (h^2 + h) and MLP (8h^2 + 5h),
  // and the last block's pre-only adaLN (2h^2 + 2h): a closed form, not the counter's tally.
  const int64_t h = 1152, d = 28;
  const int64_t full = count_transformer(transformer_preset("mmdit-xl2"), 77).num_params;
  const int64_t shared = count_transformer(transformer_preset("s2-mmdit-xl2"), 77).num_params;
  CHECK(full - shared == (d - 1) * (15 * h * h + 12 * h) + (2 * h * h + 2 * h));
  // ...and the class-conditional one has no text stream at all: the image stream of mmdit-xl2 with a class table.
  const int64_t text_stream = (d - 1) * (18 * h * h + 15 * h) + (5 * h * h + 5 * h) + 2 * 72 * d;
  const int64_t embedders = (1024 * h + h) /*context*/ + (1024 * h + h) + (h * h + h) /*pooled MLP*/;
  CHECK(count_transformer(transformer_preset("s2-mmdit-xl2-class"), 0).num_params ==
        full - text_stream - embedders + 1001 * h);
  // Att-DiT-XL/2: DiT-XL/2 without the class table, with PixArt's caption MLP and, per block, a
  // cross-attention (q, kv, proj: 4h^2 + 4h), its adaLN shift / scale / gate (3h^2 + 3h) and the q/k
  // RMSNorm weights (2 x head_dim).
  const int64_t dit = count_transformer(transformer_preset("dit-xl2"), 0).num_params;
  CHECK(count_transformer(transformer_preset("s2-att-dit-xl2"), 77).num_params ==
        dit - 1001 * h + (1024 * h + h + h * h + h) + d * (7 * h * h + 7 * h + 2 * 72));
  // mDT-v2-XL/2 (MDTv2's XL/2, 4 decoder blocks): 12 + 12 encoder blocks, 1 side block and 4 decoder
  // blocks, each DiT's (18h^2 + 15h) with a relative position bias table of (2 x 16 - 1)^2 + 3 rows
  // per head; a long skip Linear(2h, h) in the 12 second-half encoder and the 4 decoder blocks; learned
  // positional embeddings for encoder and decoder (256 x h each), the mask token, the embedders and
  // DiT's final layer.
  const int64_t N = 256, rel = (31 * 31 + 3) * 16;
  const int64_t mdt = 29 * (18 * h * h + 15 * h + rel) + 16 * (2 * h * h + h) + 2 * N * h + h + (4 * 2 * 2 * h + h) +
                      (256 * h + h + h * h + h) + 1001 * h + (2 * h * h + 2 * h) + (h * 32 + 32);
  CHECK(count_transformer(transformer_preset("s2-mdt-v2-xl2-class"), 0).num_params == mdt);
  // The class-conditional PixArt: the class table's one token through a caption MLP from h instead of D_txt.
  const int64_t pixart = count_transformer(transformer_preset("s2-pixart-xl2"), 77).num_params;
  CHECK(count_transformer(transformer_preset("s2-pixart-xl2-class"), 77).num_params ==
        pixart - (1024 * h + h) + 1001 * h + (h * h + h));
  // The class-conditional Att-DiT: DiT-XL/2 and, per block, the class sublayer's adaLN shift / scale / gate.
  CHECK(count_transformer(transformer_preset("s2-att-dit-xl2-class"), 0).num_params == dit + d * (3 * h * h + 3 * h));
}

TEST_CASE("the built transformer has exactly the analytic parameter table, for every family") {
  for (const std::string preset :
       {"dit-xl2", "pixart-h1152-d28", "pixart-h1024-d28", "mmdit-xl2", "mmdit-pp-xl2", "s2-mmdit-xl2",
        "s2-mmdit-xl2-class", "s2-att-dit-xl2", "s2-mdt-v2-xl2-class", "s2-pixart-xl2-class", "s2-att-dit-xl2-class"}) {
    for (bool text_dit : {false, true}) {
      TransformerSpec s = small(preset);
      if (preset == "dit-xl2" && text_dit)
        s.conditioning = "text";
      else if (text_dit)
        continue;
      if (preset == "pixart-h1024-d28") s.context_dim = s.hidden_size;  // no caption MLP
      INFO(preset << " " << s.conditioning);
      DiffusionTransformer net(s);
      std::map<std::string, std::vector<int64_t>> built, table;
      for (const auto& p : net->named_parameters()) built[p.key()] = p.value().sizes().vec();
      for (const auto& e : count_transformer(s, 7).params) table[e.name] = e.shape;
      CHECK(built == table);
      // units cover every parameter exactly once
      size_t n = 0;
      for (const auto& u : net->units()) n += u.parameters.size();
      CHECK(n == net->parameters().size());
    }
  }
}

TEST_CASE("forward and backward of small overrides of every family") {
  torch::manual_seed(0);
  for (const std::string preset :
       {"dit-xl2", "pixart-h1152-d28", "mmdit-xl2", "mmdit-pp-xl2", "s2-mmdit-xl2", "s2-mmdit-xl2-class",
        "s2-att-dit-xl2", "s2-mdt-v2-xl2-class", "s2-pixart-xl2-class", "s2-att-dit-xl2-class"}) {
    INFO(preset);
    TransformerSpec s = small(preset);
    DiffusionTransformer net(s);
    // Move the zero-initialised parts off zero so that every parameter gets a gradient.
    {
      torch::NoGradGuard g;
      for (auto& p : net->parameters()) p.add_(torch::randn_like(p) * 0.02);
    }
    const int64_t B = 2, T = 5;
    const torch::Tensor x = torch::randn({B, s.in_channels, 8, 8});
    const torch::Tensor t = torch::tensor({3.0f, 900.0f});
    const torch::Tensor text = torch::randn({B, T, s.context_dim});
    const torch::Tensor mask = torch::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}).view({B, T}).to(torch::kBool);
    const torch::Tensor labels = torch::tensor({1, 10});  // 10 = the null class
    ControlInputs controls{torch::rand({B, 4}), torch::rand({B, 2}) * 256, torch::rand({B}),
                           torch::ones({B}, torch::kBool)};
    const bool mmpp = s.family == TransformerFamily::kMMDiTPP;
    const torch::Tensor all = net->forward_all(x, t, text, mask, mmpp ? &controls : nullptr, labels);
    CHECK(all.sizes() == torch::IntArrayRef({B, s.out_channels(), 8, 8}));
    const torch::Tensor y = net->forward(x, t, text, mask, mmpp ? &controls : nullptr, labels);
    CHECK(y.sizes() == x.sizes());
    torch::Tensor objective = all.pow(2).mean();
    if (s.family == TransformerFamily::kMDT)  // (the side-interpolater works in the masked forward only)
      objective = objective +
                  net->forward_all(x, t, text, mask, nullptr, labels, kept_tokens(0, 1, {0, 1}, 16, 0.3)).pow(2).mean();
    objective.backward();
    for (const auto& p : net->named_parameters()) {
      INFO(p.key());
      REQUIRE(p.value().grad().defined());
      CHECK(torch::isfinite(p.value().grad()).all().item<bool>());
    }
    // Text padding does not leak: changing a masked-out token changes nothing (class DiT ignores text).
    torch::Tensor text2 = text.clone();
    text2.index_put_({0, 4}, torch::randn({s.context_dim}) * 10);
    if (s.conditioning != "class")
      CHECK(torch::allclose(net->forward_all(x, t, text2, mask, mmpp ? &controls : nullptr, labels).select(0, 0),
                            all.select(0, 0), 1e-5, 1e-5));
    // No mask means every token is real: the same as an all-true mask (the trainer drops those).
    {
      torch::NoGradGuard g;
      const torch::Tensor ones = torch::ones({B, T}, torch::kBool);
      const torch::Tensor with_mask = net->forward_all(x, t, text, ones, mmpp ? &controls : nullptr, labels);
      CHECK(torch::allclose(net->forward_all(x, t, text, torch::Tensor(), mmpp ? &controls : nullptr, labels),
                            with_mask, 1e-5, 1e-6));
      if (s.conditioning != "class")
        CHECK_FALSE(torch::allclose(with_mask, all, 1e-5, 1e-6));  // (while the real mask matters)
    }
  }
}

TEST_CASE("adaLN-Zero blocks start as the identity (DiT, mmDiT)") {
  for (const std::string preset : {"dit-xl2", "mmdit-xl2"}) {
    INFO(preset);
    TransformerSpec s = small(preset);
    DiffusionTransformer net(s);
    RecordingRunner rec;
    net->set_unit_runner(&rec);
    const torch::Tensor x = torch::randn({2, 4, 8, 8});
    net->forward(x, torch::tensor({5.0f, 50.0f}), torch::randn({2, 3, s.context_dim}), torch::Tensor(), nullptr,
                 torch::tensor({0, 1}));
    REQUIRE(rec.calls.size() == static_cast<size_t>(s.depth + 2));
    for (int64_t b = 1; b <= s.depth; ++b) CHECK(torch::equal(rec.calls[b].second, rec.calls[b].first[0]));
  }
}

TEST_CASE("joint attention equals attention over the explicit concatenation of the two streams") {
  // Independent expectation: the image queries' output over [text; image] keys is the two partial
  // attentions (over text keys only, over image keys only) merged by their softmax normalisers.
  torch::manual_seed(1);
  const int64_t B = 2, H = 3, T = 4, N = 6, d = 8;
  const torch::Tensor qx = torch::randn({B, H, N, d}), kc = torch::randn({B, H, T, d}), vc = torch::randn({B, H, T, d});
  const torch::Tensor kx = torch::randn({B, H, N, d}), vx = torch::randn({B, H, N, d}), qc = torch::randn({B, H, T, d});
  const torch::Tensor joint = attention(torch::cat({qc, qx}, 2), torch::cat({kc, kx}, 2), torch::cat({vc, vx}, 2));
  auto partial = [&](const torch::Tensor& k, const torch::Tensor& v) {
    const torch::Tensor s = torch::matmul(qx, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(d));
    return std::make_pair(torch::logsumexp(s, -1, true), attention_explicit(qx, k, v));
  };
  auto [l1, o1] = partial(kc, vc);
  auto [l2, o2] = partial(kx, vx);
  const torch::Tensor l = torch::logaddexp(l1, l2);
  const torch::Tensor merged = torch::exp(l1 - l) * o1 + torch::exp(l2 - l) * o2;
  CHECK(torch::allclose(joint.narrow(2, T, N), merged, 1e-5, 1e-6));
}

TEST_CASE("attention: the path in use equals an explicit per-head loop, masks included") {
  torch::manual_seed(2);
  const int64_t B = 2, H = 2, Nq = 5, Nk = 7, d = 4;
  const torch::Tensor q = torch::randn({B, H, Nq, d}), k = torch::randn({B, H, Nk, d}), v = torch::randn({B, H, Nk, d});
  torch::Tensor mask = torch::rand({B, Nk}) > 0.3;
  mask.index_put_({torch::indexing::Slice(), 0}, true);  // every row attends somewhere
  const torch::Tensor got = attention(q, k, v, mask);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Nq; ++i) {
        std::vector<double> w(Nk);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j < Nk; ++j)
          if (mask[b][j].item<bool>())
            mx = std::max(mx, (q[b][h][i] * k[b][h][j]).sum().item<double>() / std::sqrt(4.0));
        for (int64_t j = 0; j < Nk; ++j) {
          w[j] = mask[b][j].item<bool>() ? std::exp((q[b][h][i] * k[b][h][j]).sum().item<double>() / 2.0 - mx) : 0.0;
          sum += w[j];
        }
        for (int64_t c = 0; c < d; ++c) {
          double o = 0;
          for (int64_t j = 0; j < Nk; ++j) o += w[j] / sum * v[b][h][j][c].item<double>();
          CHECK(got[b][h][i][c].item<double>() == Approx(o).margin(1e-5));
        }
      }
  if (fused_attention_available()) CHECK(torch::allclose(got, attention_explicit(q, k, v, mask), 1e-5, 1e-6));
}

TEST_CASE("another resolution: resampled positions keep the grid's extent, extrapolated ones extend it") {
  // Zeros through the patch embedding: the embed unit's image tokens are (conv bias +) positions.
  TransformerSpec s = small("dit-xl2");
  s.conditioning = "text";
  torch::NoGradGuard g;
  auto image_tokens = [&](DiffusionTransformer& net, int64_t size) {
    RecordingRunner rec;
    net->set_unit_runner(&rec);
    net->forward(torch::zeros({1, 4, size, size}), torch::tensor({10.0f}), torch::zeros({1, 2, s.context_dim}));
    net->set_unit_runner(nullptr);
    const int64_t n = (size / 2) * (size / 2);
    return rec.calls[0].second.narrow(1, 0, n).squeeze(0);  // [n, h], row-major grid
  };
  torch::manual_seed(3);
  DiffusionTransformer res(s);
  s.pos_embed_grid = "extrapolate";
  torch::manual_seed(3);
  DiffusionTransformer ext(s);                                                // same weights, other grid rule
  const torch::Tensor r1 = image_tokens(res, 8), r2 = image_tokens(res, 16);  // 4x4 and 8x8 grids
  const torch::Tensor e1 = image_tokens(ext, 8), e2 = image_tokens(ext, 16);
  // At the training resolution the tokens carry the diffusion core's embeddings of either rule
  // (token i - token 0 cancels the patch-embedding bias).
  const torch::Tensor pr = models::sincos_pos_embed_2d(s.hidden_size, 4, 4, 1.0, models::PosEmbedGrid::kResampled);
  const torch::Tensor pe = models::sincos_pos_embed_2d(s.hidden_size, 4, 4, 1.0, models::PosEmbedGrid::kExtrapolate);
  CHECK(torch::allclose(r1 - r1[0], (pr - pr[0]).to(torch::kFloat32), 1e-5, 1e-5));
  CHECK(torch::allclose(e1 - e1[0], (pe - pe[0]).to(torch::kFloat32), 1e-5, 1e-5));
  // Resampled: the 8x8 grid spans the 4x4 grid's extent — its corners are the 4x4 grid's corners.
  CHECK(torch::allclose(r2[0], r1[0], 1e-5, 1e-5));
  CHECK(torch::allclose(r2[63], r1[15], 1e-5, 1e-5));
  // Extrapolated: the 8x8 grid extends it — its first 4x4 block repeats the 4x4 grid, its corner does not.
  CHECK(torch::allclose(e2[8 + 1], e1[4 + 1], 1e-5, 1e-5));
  CHECK_FALSE(torch::allclose(e2[63], e1[15], 1e-3, 1e-3));
}

TEST_CASE("MDT: a training step's FLOPs count the masked pass") {
  // The masked pass runs the 24 encoder blocks on 60% of the tokens (mask ratio 0.3 + 0.1 on average)
  // and the side block and the 4 decoder blocks on all of them: about (24 x 0.6 + 5) / 28 of a forward
  // of the whole input (attention, skips and embeddings aside: within 10%).
  const TransformerCost c = count_transformer(transformer_preset("s2-mdt-v2-xl2-class"), 0);
  const double forward = static_cast<double>(c.total.macs_linear_conv + c.total.macs_attention);
  const double extra = static_cast<double>(c.training_extra.macs_linear_conv + c.training_extra.macs_attention);
  CHECK(extra / forward == Approx((24 * 0.6 + 5) / 28.0).epsilon(0.1));
  TransformerSpec off = transformer_preset("s2-mdt-v2-xl2-class");
  off.mask_ratio = 0;
  CHECK(count_transformer(off, 0).training_extra.macs_linear_conv == 0);
  CHECK(count_transformer(transformer_preset("dit-xl2"), 0).training_extra.macs_linear_conv == 0);
}

TEST_CASE("MDT: the masked forward, its keyed masks, and a mask that hides nothing") {
  // The masks: per step, floor(N (1 - r)) tokens kept with r in [ratio, ratio + 0.2); per sample,
  // keyed by its id (the same whatever else is in the batch, so on any rank count); ascending, unique.
  const int64_t N = 64;
  const torch::Tensor both = kept_tokens(7, 3, {11, 12}, N, 0.3), alone = kept_tokens(7, 3, {12}, N, 0.3);
  CHECK(torch::equal(both[1], alone[0]));
  CHECK_FALSE(torch::equal(both[0], both[1]));
  const double r = token_mask_ratio(7, 3, 0.3);
  CHECK(r >= 0.3);
  CHECK(r < 0.5);
  CHECK(both.size(1) == static_cast<int64_t>(std::floor(N * (1 - r))));
  for (int64_t i = 0; i < 2; ++i) {
    const torch::Tensor row = both[i];
    CHECK(torch::equal(row, std::get<0>(torch::sort(std::get<0>(torch::_unique(row))))));
    CHECK(row.min().item<int64_t>() >= 0);
    CHECK(row.max().item<int64_t>() < N);
  }
  std::set<int64_t> counts;
  for (int64_t step = 0; step < 200; ++step) counts.insert(kept_tokens(1, step, {0}, N, 0.3).size(1));
  CHECK(*counts.begin() >= static_cast<int64_t>(std::floor(N * 0.5)));   // at most 0.5 hidden
  CHECK(*counts.rbegin() <= static_cast<int64_t>(std::floor(N * 0.7)));  // at least 0.3 hidden
  CHECK(counts.size() > 5);
  // The model: keeping every token is the unmasked forward; hiding some changes the output.
  torch::manual_seed(0);
  TransformerSpec s = small("s2-mdt-v2-xl2-class");
  DiffusionTransformer net(s);
  torch::NoGradGuard g;
  for (auto& p : net->parameters()) p.add_(torch::randn_like(p) * 0.02);
  const int64_t B = 2;
  const torch::Tensor x = torch::randn({B, s.in_channels, 8, 8}), t = torch::tensor({3.0f, 900.0f});
  const torch::Tensor labels = torch::tensor({1, 4}), text = torch::randn({B, 1, s.context_dim});
  const torch::Tensor plain = net->forward_all(x, t, text, {}, nullptr, labels);
  const torch::Tensor all = torch::arange(16).repeat({B, 1});
  CHECK(torch::allclose(net->forward_all(x, t, text, {}, nullptr, labels, all), plain, 1e-5, 1e-6));
  const torch::Tensor some = kept_tokens(0, 1, {0, 1}, 16, 0.3);
  CHECK_FALSE(torch::allclose(net->forward_all(x, t, text, {}, nullptr, labels, some), plain, 1e-4, 1e-5));
  // Another grid than the learned one is refused; so is a mask for a model without one.
  CHECK_THROWS_AS(net->forward_all(torch::randn({B, s.in_channels, 16, 16}), t, text, {}, nullptr, labels), Error);
  DiffusionTransformer dit(small("dit-xl2"));
  CHECK_THROWS_AS(dit->forward_all(x, t, text, {}, nullptr, torch::tensor({1, 2}), some), Error);
}
