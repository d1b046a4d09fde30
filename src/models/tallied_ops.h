#pragma once
// Layer calls that also report their cost to the active OpTally (see models/op_tally.h).
// Costs come from the runtime shapes: an independent check of the analytic counter.

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

namespace dtrainer::models::ops {

torch::Tensor linear(torch::nn::Linear& layer, const torch::Tensor& x);
torch::Tensor conv(torch::nn::Conv2d& layer, const torch::Tensor& x);
torch::Tensor norm(torch::nn::GroupNorm& layer, const torch::Tensor& x);
torch::Tensor norm(torch::nn::LayerNorm& layer, const torch::Tensor& x);
// GroupNorm of a token sequence x [B, C, T] whose statistics use only the tokens where
// mask [B, T] is true (padding must not shift the real tokens). Equals layer(x) for an all-true
// or undefined mask.
torch::Tensor masked_group_norm(torch::nn::GroupNorm& layer, const torch::Tensor& x, const torch::Tensor& mask);

// Multi-head attention softmax(q k^T / sqrt(d)) v (models::attention: fused where LibTorch has it).
// q [B, Nq, heads*d], k and v [B, Nk, heads*d]; key_mask [B, Nk] bool (true = attend) or undefined.
// Returns [B, Nq, heads*d].
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t heads,
                        const torch::Tensor& key_mask);

}  // namespace dtrainer::models::ops
