#pragma once
// Unit<Block>: one unit of a model (models/unit_runner.h), held and called like a module, so that a
// model's forward reads as its architecture does:
//
//   h = resnets[j](h, temb);
//   h = attentions[j](h, text, held(mask));
//   const auto [x, c] = unpack<2>(embed(x_t, t, text));
//
// A call runs block->forward(...) through the model's unit runner. Every torch::Tensor argument is
// an input of the unit (gradients flow to the floating ones; a checkpointing runner saves them);
// any other argument, and a tensor wrapped in held(), is captured by value and passed as it is
// (a mask, a setting). forward may return a tensor or a std::vector of tensors (several outputs);
// the call returns the same.

#include <cstddef>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "dtrainer/models/unit_runner.h"

namespace dtrainer::models {

// A value passed to a block as it is, not as an input of the unit.
template <class T>
struct Held {
  T value;
};
template <class T>
Held<std::decay_t<T>> held(T&& value) {
  return {std::forward<T>(value)};
}

namespace unit_detail {
struct InputSlot {
  size_t index;
};
inline InputSlot capture(const torch::Tensor& t, std::vector<torch::Tensor>& inputs) {
  inputs.push_back(t);
  return {inputs.size() - 1};
}
template <class T>
Held<T> capture(const Held<T>& h, std::vector<torch::Tensor>&) {
  return h;
}
template <class T, class = std::enable_if_t<!std::is_same_v<std::decay_t<T>, torch::Tensor>>>
Held<std::decay_t<T>> capture(const T& v, std::vector<torch::Tensor>&) {
  return {v};
}
inline const torch::Tensor& resolve(const InputSlot& s, const std::vector<torch::Tensor>& in) { return in[s.index]; }
template <class T>
const T& resolve(const Held<T>& h, const std::vector<torch::Tensor>&) {
  return h.value;
}
inline std::vector<torch::Tensor> outputs(torch::Tensor t) { return {std::move(t)}; }
inline std::vector<torch::Tensor> outputs(std::vector<torch::Tensor> v) { return v; }
}  // namespace unit_detail

template <class Block>
class Unit {
 public:
  Unit() = default;
  Unit(const UnitModel* model, size_t index, std::shared_ptr<Block> block)
      : model_(model), index_(index), block_(std::move(block)) {}

  size_t index() const { return index_; }
  const std::shared_ptr<Block>& block() const { return block_; }
  Block* operator->() const { return block_.get(); }

  template <class... Args>
  auto operator()(const Args&... args) const {
    using Result = decltype(block_->forward(unit_detail::resolve(
        unit_detail::capture(args, std::declval<std::vector<torch::Tensor>&>()), std::vector<torch::Tensor>{})...));
    std::vector<torch::Tensor> inputs;
    // (braced initialisation: the arguments are captured left to right, so slots number in order)
    auto captured = std::tuple<decltype(unit_detail::capture(args, inputs))...>{unit_detail::capture(args, inputs)...};
    auto block = block_;
    std::vector<torch::Tensor> out = model_->run_unit(
        index_,
        [block, captured](const std::vector<torch::Tensor>& in) {
          return unit_detail::outputs(
              std::apply([&](const auto&... a) { return block->forward(unit_detail::resolve(a, in)...); }, captured));
        },
        inputs);
    if constexpr (std::is_same_v<Result, torch::Tensor>)
      return out.at(0);
    else
      return out;
  }

 private:
  const UnitModel* model_ = nullptr;
  size_t index_ = 0;
  std::shared_ptr<Block> block_;
};

}  // namespace dtrainer::models
