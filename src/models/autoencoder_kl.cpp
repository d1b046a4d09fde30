#include "dtrainer/models/autoencoder_kl.h"

#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dtrainer/ckpt/weights_file.h"
#include "dtrainer/core/error.h"
#include "dtrainer/models/pretrained_folder.h"

namespace dtrainer::models {

namespace nn = torch::nn;
using torch::Tensor;

void AutoencoderKLConfig::validate(const std::string& where) const {
  auto fail = [&](const std::string& field, const std::string& what) { throw Error(where + "." + field, what); };
  if (block_out_channels.empty()) fail("block_out_channels", "needs at least one level");
  for (int64_t c : block_out_channels)
    if (c < 1 || c % norm_num_groups)
      fail("block_out_channels", "every width must be a positive multiple of norm_num_groups");
  if (norm_num_groups < 1) fail("norm_num_groups", "must be positive");
  if (in_channels < 1) fail("in_channels", "must be positive");
  if (out_channels < 1) fail("out_channels", "must be positive");
  if (latent_channels < 1) fail("latent_channels", "must be positive");
  if (layers_per_block < 1) fail("layers_per_block", "must be positive");
  if (!(scaling_factor > 0)) fail("scaling_factor", "must be positive");
}

AutoencoderKLConfig sd_vae_config(double scaling_factor) {
  AutoencoderKLConfig c;
  c.block_out_channels = {128, 256, 512, 512};
  c.layers_per_block = 2;
  c.scaling_factor = scaling_factor;
  c.sample_size = 512;
  return c;
}

AutoencoderKLConfig parse_autoencoder_config(const std::string& path) {
  const nlohmann::json j = read_json_object(path);
  AutoencoderKLConfig c;
  const ConfigFields f(j, path);
  if (const auto* v = f.find("_class_name"); v && v->is_string() && v->get<std::string>() != "AutoencoderKL")
    throw Error(path + ": _class_name", "is '" + v->get<std::string>() + "', expected AutoencoderKL");
  f.integer("in_channels", c.in_channels);
  f.integer("out_channels", c.out_channels);
  f.integer("layers_per_block", c.layers_per_block);
  f.integer("latent_channels", c.latent_channels);
  f.integer("norm_num_groups", c.norm_num_groups);
  f.integer("sample_size", c.sample_size);
  f.real("scaling_factor", c.scaling_factor);
  f.real("shift_factor", c.shift_factor);
  if (const auto* v = f.find("block_out_channels")) {
    if (!v->is_array()) throw Error(path + ": block_out_channels", "expected a list of integers");
    c.block_out_channels.clear();
    for (const auto& x : *v) {
      if (!x.is_number_integer()) throw Error(path + ": block_out_channels", "expected a list of integers");
      c.block_out_channels.push_back(x.get<int64_t>());
    }
  }
  auto block_types = [&](const char* key, const char* expected) {
    const auto* v = f.find(key);
    if (!v) return;
    if (!v->is_array() || v->size() != c.block_out_channels.size())
      throw Error(path + ": " + std::string(key), "expected one block type per entry of block_out_channels (" +
                                                      std::to_string(c.block_out_channels.size()) + ")");
    for (const auto& x : *v)
      if (!x.is_string() || x.get<std::string>() != expected)
        throw Error(path + ": " + std::string(key),
                    "has " + x.dump() + "; only " + expected + " blocks are implemented (SD / SDXL's VAE)");
  };
  block_types("down_block_types", "DownEncoderBlock2D");
  block_types("up_block_types", "UpDecoderBlock2D");
  if (const auto* v = f.find("act_fn"); v && (!v->is_string() || v->get<std::string>() != "silu"))
    throw Error(path + ": act_fn", "is " + v->dump() + "; only silu is implemented (SD / SDXL's VAE)");
  for (const char* key : {"use_quant_conv", "use_post_quant_conv"})
    if (const auto* v = f.find(key); v && !(v->is_boolean() && v->get<bool>()))
      throw Error(path + ": " + std::string(key), "is " + v->dump() + "; only true is implemented (SD / SDXL's VAE)");
  if (const auto* v = f.find("mid_block_add_attention"); v && !(v->is_boolean() && v->get<bool>()))
    throw Error(path + ": mid_block_add_attention", "is " + v->dump() + "; only true is implemented");
  c.validate(path);
  return c;
}

namespace vae_detail {

nn::GroupNorm group_norm(int64_t groups, int64_t channels) {
  return nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(1e-6));
}
nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t padding = -1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(padding < 0 ? k / 2 : padding));
}

// ResnetBlock2D without a time embedding: norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2, plus the
// input (1x1-projected by conv_shortcut when the width changes).
struct ResnetBlock : nn::Module {
  ResnetBlock(int64_t in, int64_t out, int64_t groups) {
    norm1 = register_module("norm1", group_norm(groups, in));
    conv1 = register_module("conv1", conv(in, out, 3));
    norm2 = register_module("norm2", group_norm(groups, out));
    conv2 = register_module("conv2", conv(out, out, 3));
    if (in != out) conv_shortcut = register_module("conv_shortcut", conv(in, out, 1));
  }
  Tensor forward(const Tensor& x) {
    Tensor h = conv1(torch::silu(norm1(x)));
    h = conv2(torch::silu(norm2(h)));
    return (conv_shortcut ? conv_shortcut(x) : x) + h;
  }
  nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
};

// The mid block's attention: one head over every pixel, GroupNorm first, biased q/k/v/out
// projections, a residual connection; softmax in fp32 (diffusers' upcast_softmax).
struct Attention : nn::Module {
  Attention(int64_t channels, int64_t groups) {
    group_norm = register_module("group_norm", vae_detail::group_norm(groups, channels));
    to_q = register_module("to_q", nn::Linear(channels, channels));
    to_k = register_module("to_k", nn::Linear(channels, channels));
    to_v = register_module("to_v", nn::Linear(channels, channels));
    to_out = register_module("to_out", nn::ModuleList());
    out = nn::Linear(channels, channels);
    to_out->push_back(out);
  }
  Tensor forward(const Tensor& x) {
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const Tensor h = group_norm(x).view({B, C, H * W}).transpose(1, 2);  // [B, HW, C]
    const Tensor q = to_q(h), k = to_k(h), v = to_v(h);
    const Tensor scores =
        torch::matmul(q.to(torch::kFloat32), k.to(torch::kFloat32).transpose(1, 2)) / std::sqrt(static_cast<double>(C));
    const Tensor a = torch::matmul(scores.softmax(-1).to(v.scalar_type()), v);
    return out(a).transpose(1, 2).reshape({B, C, H, W}) + x;
  }
  nn::GroupNorm group_norm{nullptr};
  nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, out{nullptr};
  nn::ModuleList to_out{nullptr};
};

// UNetMidBlock2D: resnet, attention, resnet.
struct MidBlock : nn::Module {
  MidBlock(int64_t channels, int64_t groups) {
    nn::ModuleList r, a;
    resnets = {std::make_shared<ResnetBlock>(channels, channels, groups),
               std::make_shared<ResnetBlock>(channels, channels, groups)};
    attention = std::make_shared<Attention>(channels, groups);
    for (auto& b : resnets) r->push_back(b);
    a->push_back(attention);
    register_module("attentions", a);
    register_module("resnets", r);
  }
  Tensor forward(const Tensor& x) { return resnets[1]->forward(attention->forward(resnets[0]->forward(x))); }
  std::vector<std::shared_ptr<ResnetBlock>> resnets;
  std::shared_ptr<Attention> attention;
};

// Downsample2D of the encoder: pad right and bottom by one, then a stride-2 3x3 convolution.
struct Downsample : nn::Module {
  explicit Downsample(int64_t channels) {
    conv = register_module("conv", vae_detail::conv(channels, channels, 3, 2, 0));
  }
  Tensor forward(const Tensor& x) { return conv(torch::constant_pad_nd(x, {0, 1, 0, 1}, 0)); }
  nn::Conv2d conv{nullptr};
};

// Upsample2D of the decoder: nearest-neighbour x2, then a 3x3 convolution.
struct Upsample : nn::Module {
  explicit Upsample(int64_t channels) { conv = register_module("conv", vae_detail::conv(channels, channels, 3)); }
  Tensor forward(const Tensor& x) {
    // (nearest-neighbour upsampling in fp32, as diffusers does for bf16)
    const Tensor up = torch::upsample_nearest2d(x.to(torch::kFloat32), {x.size(2) * 2, x.size(3) * 2});
    return conv(up.to(x.scalar_type()));
  }
  nn::Conv2d conv{nullptr};
};

// DownEncoderBlock2D / UpDecoderBlock2D: res blocks, then the sampler (all levels but the last),
// under `samplers` ("downsamplers" / "upsamplers").
template <class Sampler>
struct Level : nn::Module {
  Level(int64_t in, int64_t out, int64_t layers, int64_t groups, bool resample, const char* samplers) {
    nn::ModuleList r;
    for (int64_t i = 0; i < layers; ++i) {
      resnets.push_back(std::make_shared<ResnetBlock>(i == 0 ? in : out, out, groups));
      r->push_back(resnets.back());
    }
    register_module("resnets", r);
    if (resample) {
      sampler = std::make_shared<Sampler>(out);
      nn::ModuleList s;
      s->push_back(sampler);
      register_module(samplers, s);
    }
  }
  Tensor forward(Tensor x) {
    for (auto& r : resnets) x = r->forward(x);
    return sampler ? sampler->forward(x) : x;
  }
  std::vector<std::shared_ptr<ResnetBlock>> resnets;
  std::shared_ptr<Sampler> sampler;
};
struct EncoderLevel : Level<Downsample> {
  EncoderLevel(int64_t in, int64_t out, int64_t layers, int64_t groups, bool downsample)
      : Level(in, out, layers, groups, downsample, "downsamplers") {}
};
struct DecoderLevel : Level<Upsample> {
  DecoderLevel(int64_t in, int64_t out, int64_t layers, int64_t groups, bool upsample)
      : Level(in, out, layers, groups, upsample, "upsamplers") {}
};

}  // namespace vae_detail

using namespace vae_detail;

AutoencoderKLImpl::AutoencoderKLImpl(const AutoencoderKLConfig& c) : config_(c) {
  c.validate("vae");
  const auto& ch = c.block_out_channels;
  const int64_t levels = static_cast<int64_t>(ch.size()), g = c.norm_num_groups;
  encoder_ = register_module("encoder", std::make_shared<nn::Module>());
  enc_conv_in_ = encoder_->register_module("conv_in", conv(c.in_channels, ch[0], 3));
  nn::ModuleList down;
  for (int64_t l = 0; l < levels; ++l) {
    down_.push_back(
        std::make_shared<EncoderLevel>(l == 0 ? ch[0] : ch[l - 1], ch[l], c.layers_per_block, g, l + 1 < levels));
    down->push_back(down_.back());
  }
  encoder_->register_module("down_blocks", down);
  enc_mid_ = encoder_->register_module("mid_block", std::make_shared<MidBlock>(ch.back(), g));
  enc_norm_out_ = encoder_->register_module("conv_norm_out", group_norm(g, ch.back()));
  enc_conv_out_ = encoder_->register_module("conv_out", conv(ch.back(), 2 * c.latent_channels, 3));
  quant_conv_ = register_module("quant_conv", conv(2 * c.latent_channels, 2 * c.latent_channels, 1));
  post_quant_conv_ = register_module("post_quant_conv", conv(c.latent_channels, c.latent_channels, 1));

  decoder_ = register_module("decoder", std::make_shared<nn::Module>());
  dec_conv_in_ = decoder_->register_module("conv_in", conv(c.latent_channels, ch.back(), 3));
  dec_mid_ = decoder_->register_module("mid_block", std::make_shared<MidBlock>(ch.back(), g));
  nn::ModuleList up;
  for (int64_t i = 0; i < levels; ++i) {  // deepest level first
    const int64_t l = levels - 1 - i;
    up_.push_back(
        std::make_shared<DecoderLevel>(i == 0 ? ch.back() : ch[l + 1], ch[l], c.layers_per_block + 1, g, l > 0));
    up->push_back(up_.back());
  }
  decoder_->register_module("up_blocks", up);
  dec_norm_out_ = decoder_->register_module("conv_norm_out", group_norm(g, ch[0]));
  dec_conv_out_ = decoder_->register_module("conv_out", conv(ch[0], c.out_channels, 3));
}

std::pair<Tensor, Tensor> AutoencoderKLImpl::encode_moments(const Tensor& images) {
  const int64_t f = config_.downsampling();
  if (!images.defined() || images.dim() != 4 || images.size(1) != config_.in_channels || images.size(2) % f ||
      images.size(3) % f)
    throw Error("images", "expected [B, " + std::to_string(config_.in_channels) + ", H, W] with H, W multiples of " +
                              std::to_string(f) + ", got " +
                              (images.defined() ? c10::str(images.sizes()) : std::string("an undefined tensor")));
  Tensor h = enc_conv_in_(images.to(enc_conv_in_->weight.scalar_type()));
  for (auto& level : down_) h = level->forward(h);
  h = enc_mid_->forward(h);
  h = enc_conv_out_(torch::silu(enc_norm_out_(h)));
  const Tensor moments = quant_conv_(h);
  const auto parts = moments.chunk(2, 1);
  return {parts[0], parts[1].clamp(-30.0, 20.0)};
}

Tensor AutoencoderKLImpl::encode(const Tensor& images, const Tensor& noise) {
  const auto [mean, logvar] = encode_moments(images);
  Tensor z = mean;
  if (noise.defined()) {
    if (noise.sizes() != mean.sizes())
      throw Error("noise",
                  "expected " + c10::str(mean.sizes()) + " (the latents' shape), got " + c10::str(noise.sizes()));
    z = mean + (0.5 * logvar).exp() * noise.to(mean.scalar_type());
  }
  return (z - config_.shift_factor) * config_.scaling_factor;
}

Tensor AutoencoderKLImpl::decode(const Tensor& latents) {
  if (!latents.defined() || latents.dim() != 4 || latents.size(1) != config_.latent_channels)
    throw Error("latents", "expected [B, " + std::to_string(config_.latent_channels) + ", h, w], got " +
                               (latents.defined() ? c10::str(latents.sizes()) : std::string("an undefined tensor")));
  const Tensor z = latents.to(dec_conv_in_->weight.scalar_type()) / config_.scaling_factor + config_.shift_factor;
  Tensor h = dec_conv_in_(post_quant_conv_(z));
  h = dec_mid_->forward(h);
  for (auto& level : up_) h = level->forward(h);
  return dec_conv_out_(torch::silu(dec_norm_out_(h)));
}

namespace {
// diffusers renamed the mid-block attention in 2023; files written before keep the old names.
std::string current_vae_name(const std::string& name) {
  static const std::pair<const char*, const char*> renames[] = {
      {".attentions.0.query.", ".attentions.0.to_q."},
      {".attentions.0.key.", ".attentions.0.to_k."},
      {".attentions.0.value.", ".attentions.0.to_v."},
      {".attentions.0.proj_attn.", ".attentions.0.to_out.0."},
  };
  for (const auto& [old_part, new_part] : renames) {
    const size_t at = name.find(old_part);
    if (at != std::string::npos) return name.substr(0, at) + new_part + name.substr(at + std::strlen(old_part));
  }
  return name;
}
}  // namespace

AutoencoderKL load_autoencoder(const std::string& dir, torch::ScalarType dtype) {
  const PretrainedFolder folder =
      find_pretrained_folder(dir, "diffusion_pytorch_model.safetensors",
                             "a diffusers AutoencoderKL folder: config.json and diffusion_pytorch_model.safetensors, "
                             "e.g. the 'vae' folder of an SDXL release");
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16)
    throw Error("vae dtype", "expected fp32 or bf16, got " + std::string(c10::toString(dtype)));
  AutoencoderKL vae(parse_autoencoder_config(folder.config));
  ckpt::WeightsNaming naming;
  naming.module_name = current_vae_name;
  ckpt::load_weights(folder.weights, *vae, naming);
  vae->to(dtype);
  vae->eval();
  return vae;
}

}  // namespace dtrainer::models
