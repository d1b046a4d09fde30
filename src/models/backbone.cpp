#include "dtrainer/models/backbone.h"

#include <map>
#include <type_traits>

#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/models/transformer.h"
#include "dtrainer/models/unet.h"

namespace dtrainer::models {
namespace {

// A LibTorch module holder (UNet, DiffusionTransformer) behind the Backbone interface.
template <typename Net, typename Spec>
class ModuleBackbone final : public Backbone {
 public:
  explicit ModuleBackbone(const Spec& spec) : net_(spec), first_param_(net_->parameters().front()) {}
  torch::Tensor forward(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                        const torch::Tensor& text_mask, const ControlInputs* controls) override {
    // The inputs in the dtype the parameters have now (a bf16 compute copy makes them bf16; under
    // zero3 they are empty between runs but keep their dtype), the prediction back in fp32.
    const torch::ScalarType dt = first_param_.scalar_type();
    const torch::Tensor text_in = text.defined() ? text.to(dt) : text;
    return net_->forward(x_t.to(dt), t, text_in, text_mask, controls).to(torch::kFloat32);
  }
  torch::Tensor forward_masked(const torch::Tensor& x_t, const torch::Tensor& t, const torch::Tensor& text,
                               const torch::Tensor& text_mask, const ControlInputs* controls,
                               const torch::Tensor& keep) override {
    if constexpr (std::is_same_v<Net, DiffusionTransformer>) {
      const torch::ScalarType dt = first_param_.scalar_type();
      const torch::Tensor text_in = text.defined() ? text.to(dt) : text;
      return net_->forward(x_t.to(dt), t, text_in, text_mask, controls, torch::Tensor(), keep).to(torch::kFloat32);
    } else {
      throw Error("keep", "this backbone has no masked forward (MDT's masked training)");
    }
  }
  torch::nn::Module& module() override { return *net_; }
  UnitModel& unit_model() override { return *net_; }

 private:
  Net net_;
  torch::Tensor first_param_;  // (the same TensorImpl whatever set_data later puts in it)
};

}  // namespace

// Each family's module (the registry's torch half: a family of models/backbone_spec.h gets its builder here).
std::unique_ptr<Backbone> build_backbone(const BackboneSpec& spec) {
  using Build = std::unique_ptr<Backbone> (*)(const BackboneSpec&);
  static const std::map<std::string, Build> builders = {
      {"unet",
       [](const BackboneSpec& s) -> std::unique_ptr<Backbone> {
         return std::make_unique<ModuleBackbone<UNet, UNetSpec>>(s.unet);
       }},
      {"transformer",
       [](const BackboneSpec& s) -> std::unique_ptr<Backbone> {
         return std::make_unique<ModuleBackbone<DiffusionTransformer, TransformerSpec>>(s.transformer);
       }},
  };
  const auto it = builders.find(backbone_family(spec.family).name);
  if (it == builders.end()) throw Error("model", "backbone family '" + spec.family + "' has no module");
  return it->second(spec);
}

}  // namespace dtrainer::models
