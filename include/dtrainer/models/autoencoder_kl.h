#pragma once
// AutoencoderKL — the KL-regularised image autoencoder of latent diffusion, as Stable Diffusion and
// SDXL ship it (diffusers' AutoencoderKL: `stabilityai/sdxl-vae`, `stabilityai/sd-vae-ft-mse`).
// Images [B, 3, H, W] in [-1, 1] become latents [B, C_lat, H/f, W/f] (f = 2^(levels-1)) and back.
//
// Parameter names are diffusers', so a release's `diffusion_pytorch_model.safetensors` loads as it
// is: "encoder.down_blocks.0.resnets.0.norm1.weight", "encoder.mid_block.attentions.0.to_q.weight",
// "quant_conv.weight", "decoder.up_blocks.3.upsamplers..." (files written before diffusers renamed
// the mid-block attention — query / key / value / proj_attn — load too).
//
// The latents the diffusion model sees are scaled: z = scaling_factor * (latent - shift_factor)
// (config.json's `scaling_factor`: 0.18215 for SD's VAE, 0.13025 for SDXL's; LDM §4.3.2). encode()
// and decode() take and give those scaled latents.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace dtrainer::models {

// config.json of a diffusers AutoencoderKL (the fields the architecture needs; defaults are
// diffusers' own).
struct AutoencoderKLConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<int64_t> block_out_channels{64};  // channels per level; SD/SDXL: 128, 256, 512, 512
  int64_t layers_per_block = 1;                 // res blocks per encoder level (the decoder has one more)
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  double shift_factor = 0.0;  // (absent in SD / SDXL configs)
  int64_t sample_size = 32;   // informational: the image side it was trained at

  int64_t downsampling() const { return int64_t{1} << (block_out_channels.size() - 1); }
  // Throws dtrainer::Error("<where>.<field>", ...) on an inconsistency.
  void validate(const std::string& where) const;
};

// Parses a diffusers config.json (path named in every error). Refuses block types, activations and
// options this implementation does not have (e.g. `use_quant_conv: false`, an `act_fn` other than
// silu) rather than building something else.
AutoencoderKLConfig parse_autoencoder_config(const std::string& path);
// SD / SDXL's architecture (block_out_channels 128, 256, 512, 512; 2 res blocks; 4 latent channels)
// with the given scaling factor.
AutoencoderKLConfig sd_vae_config(double scaling_factor = 0.18215);

namespace vae_detail {
struct ResnetBlock;
struct MidBlock;
struct EncoderLevel;
struct DecoderLevel;
}  // namespace vae_detail

class AutoencoderKLImpl : public torch::nn::Module {
 public:
  explicit AutoencoderKLImpl(const AutoencoderKLConfig& config);

  // The posterior's moments: mean and log-variance [B, C_lat, H/f, W/f], unscaled (log-variance
  // clamped to [-30, 20] as diffusers does). H and W must be multiples of f.
  std::pair<torch::Tensor, torch::Tensor> encode_moments(const torch::Tensor& images);
  // Scaled latents of images in [-1, 1]: the posterior mean, or a sample mean + std * eps when
  // `noise` (the eps, of the mean's shape) is given.
  torch::Tensor encode(const torch::Tensor& images, const torch::Tensor& noise = torch::Tensor());
  // Images in (about) [-1, 1] from scaled latents.
  torch::Tensor decode(const torch::Tensor& latents);

  const AutoencoderKLConfig& config() const { return config_; }

 private:
  AutoencoderKLConfig config_;
  std::shared_ptr<torch::nn::Module> encoder_, decoder_;
  torch::nn::Conv2d enc_conv_in_{nullptr}, enc_conv_out_{nullptr}, dec_conv_in_{nullptr}, dec_conv_out_{nullptr};
  torch::nn::Conv2d quant_conv_{nullptr}, post_quant_conv_{nullptr};
  torch::nn::GroupNorm enc_norm_out_{nullptr}, dec_norm_out_{nullptr};
  std::vector<std::shared_ptr<vae_detail::EncoderLevel>> down_;
  std::vector<std::shared_ptr<vae_detail::DecoderLevel>> up_;
  std::shared_ptr<vae_detail::MidBlock> enc_mid_, dec_mid_;
};
TORCH_MODULE(AutoencoderKL);

// Builds the autoencoder of a diffusers folder (config.json + diffusion_pytorch_model.safetensors)
// and loads its weights by name, in `dtype` (fp32 or bf16). A missing file, a tensor missing or
// misshapen, or one the architecture has no place for is an Error naming the file and the tensor.
AutoencoderKL load_autoencoder(const std::string& dir, torch::ScalarType dtype = torch::kFloat32);

}  // namespace dtrainer::models
