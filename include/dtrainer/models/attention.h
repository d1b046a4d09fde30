#pragma once
// Scaled dot-product attention: LibTorch's fused, memory-efficient kernel where it exists
// (LibTorch >= 2.0), otherwise an explicit softmax(QK^T / sqrt(d)) V with the same semantics
// (Debian's LibTorch 1.13). Both paths are tested against each other where both exist, and the
// fallback against a reference.

#include <torch/types.h>

namespace dtrainer::models {

// q [B, H, Nq, d], k and v [B, H, Nk, d]; key_mask [B, Nk] bool (true = attend) or undefined.
// Returns [B, H, Nq, d].
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& key_mask = torch::Tensor());
// The explicit path, always available (the reference the fused one is tested against).
torch::Tensor attention_explicit(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                 const torch::Tensor& key_mask = torch::Tensor());
// true when attention() uses the fused kernel.
bool fused_attention_available();

}  // namespace dtrainer::models
