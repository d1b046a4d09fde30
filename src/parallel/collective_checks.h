#pragma once
// Argument checks both communicator backends make before a reduce-scatter or an all-gather.
// Private to src/parallel.

#include <string>

#include <torch/types.h>

#include "dtrainer/core/error.h"

namespace dtrainer::parallel {

// `whole` must hold world x `part` elements, both of one dtype. whole_is_input: reduce-scatter
// (whole -> part); otherwise all-gather (part -> whole). op names the operation in the error.
inline void check_whole_and_part(const std::string& op, const torch::Tensor& whole, const torch::Tensor& part,
                                 int world, bool whole_is_input) {
  const std::string whole_name = whole_is_input ? "input" : "output", part_name = whole_is_input ? "output" : "input";
  if (whole.numel() != part.numel() * world)
    throw Error("communicator." + op, whole_name + " has " + std::to_string(whole.numel()) +
                                          " elements, expected world x " + part_name + " = " +
                                          std::to_string(part.numel() * world));
  const torch::Tensor& in = whole_is_input ? whole : part;
  const torch::Tensor& out = whole_is_input ? part : whole;
  if (in.scalar_type() != out.scalar_type())
    throw Error("communicator." + op, std::string("input is ") + c10::toString(in.scalar_type()) + ", output " +
                                          c10::toString(out.scalar_type()));
}

}  // namespace dtrainer::parallel
