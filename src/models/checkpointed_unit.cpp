#include "dtrainer/models/checkpointed_unit.h"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/torch.h>

namespace dtrainer::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What backward needs besides the saved inputs; lives in the autograd context as a capsule.
struct UnitCall : torch::CustomClassHolder {
  size_t unit = 0;
  UnitRunner::Fn fn;
  CheckpointHooks* hooks = nullptr;
};

// Inputs: the unit's tensors plus a zero-size leaf that requires grad, so that the node is part of
// the graph even when no input does (the stem's input x_t): the unit's parameters are not inputs
// of this node, their gradients come from the recomputation in backward.
struct CheckpointedUnit : torch::autograd::Function<CheckpointedUnit> {
  static variable_list forward(AutogradContext* ctx, at::TensorList args, c10::intrusive_ptr<UnitCall> call) {
    const std::vector<torch::Tensor> inputs(args.begin(), args.end() - 1);
    if (call->hooks) call->hooks->before_run(call->unit, false);
    variable_list out = call->fn(inputs);
    if (call->hooks) call->hooks->after_run(call->unit, false);
    ctx->save_for_backward(inputs);
    ctx->saved_data["call"] = c10::IValue::make_capsule(call);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto call = c10::static_intrusive_pointer_cast<UnitCall>(ctx->saved_data["call"].toCapsule());
    const variable_list saved = ctx->get_saved_variables();
    std::vector<torch::Tensor> inputs;
    for (const auto& s : saved)  // (an undefined input, an absent mask, stays undefined)
      inputs.push_back(s.defined() ? s.detach().requires_grad_(s.requires_grad()) : s);
    if (call->hooks) call->hooks->before_run(call->unit, true);
    variable_list out;
    {
      torch::AutoGradMode enable(true);
      out = call->fn(inputs);
    }
    // Back-propagate every output that has a gradient (an output the caller did not use has none).
    variable_list roots, grads_in;
    for (size_t i = 0; i < out.size() && i < grad_out.size(); ++i)
      if (out[i].requires_grad() && grad_out[i].defined()) roots.push_back(out[i]), grads_in.push_back(grad_out[i]);
    if (!roots.empty()) torch::autograd::backward(roots, grads_in);
    if (call->hooks) call->hooks->after_run(call->unit, true);
    variable_list grads;
    for (const auto& in : inputs) grads.push_back(in.defined() && in.requires_grad() ? in.grad() : torch::Tensor());
    grads.emplace_back();  // the zero-size leaf
    grads.emplace_back();  // the call (not a tensor)
    return grads;
  }
};

torch::Tensor graph_anchor() {
  static thread_local torch::Tensor anchor = torch::empty({0}).requires_grad_(true);
  return anchor;
}

}  // namespace

std::vector<torch::Tensor> run_checkpointed(size_t unit, const UnitRunner::Fn& fn,
                                            const std::vector<torch::Tensor>& inputs, CheckpointHooks* hooks) {
  if (!torch::GradMode::is_enabled()) {  // nothing to recompute for: just run it (between the hooks)
    if (hooks) hooks->before_run(unit, false);
    std::vector<torch::Tensor> out = fn(inputs);
    if (hooks) hooks->after_run(unit, false);
    return out;
  }
  auto call = c10::make_intrusive<UnitCall>();
  call->unit = unit;
  call->fn = fn;
  call->hooks = hooks;
  std::vector<torch::Tensor> args = inputs;
  args.push_back(graph_anchor());
  return CheckpointedUnit::apply(at::TensorList(args), call);
}

}  // namespace dtrainer::models
