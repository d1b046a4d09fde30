#include "dtrainer/diffusion/objective.h"

#include <algorithm>
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "dtrainer/core/error.h"
#include "dtrainer/core/rng.h"

namespace dtrainer::diffusion {

const NameTable<Target>& name_table(Target) {
  static const NameTable<Target> t{{"eps", Target::kEps}, {"v", Target::kV}, {"flow", Target::kFlow}};
  return t;
}
const NameTable<LossWeighting>& name_table(LossWeighting) {
  static const NameTable<LossWeighting> t{{"none", LossWeighting::kNone},
                                          {"sigma_inv_sq", LossWeighting::kSigmaInvSq},
                                          {"min_snr", LossWeighting::kMinSnr},
                                          {"truncated_snr", LossWeighting::kTruncatedSnr}};
  return t;
}
const NameTable<TimestepSampling>& name_table(TimestepSampling) {
  static const NameTable<TimestepSampling> t{{"uniform", TimestepSampling::kUniform},
                                             {"logit_normal", TimestepSampling::kLogitNormal}};
  return t;
}
Target parse_target(const std::string& field, const std::string& text) {
  return name_table(Target{}).parse(field, text);
}
LossWeighting parse_loss_weighting(const std::string& field, const std::string& text) {
  return name_table(LossWeighting{}).parse(field, text);
}
TimestepSampling parse_timestep_sampling(const std::string& field, const std::string& text) {
  return name_table(TimestepSampling{}).parse(field, text);
}

at::Generator keyed_generator(uint64_t key) { return at::make_generator<at::CPUGeneratorImpl>(key); }

Objective::Objective(const ObjectiveConfig& c, NoiseSchedule schedule) : config_(c), schedule_(std::move(schedule)) {
  auto prob = [](double p, const char* field) {
    if (!(p >= 0 && p <= 1)) throw Error(std::string("objective.") + field, "must be a probability in [0, 1]");
  };
  prob(c.p_drop_text, "p_drop_text");
  prob(c.p_drop_control, "p_drop_control");
  if (!(c.logit_std > 0)) throw Error("objective.logit_std", "must be positive");
  if (!(c.min_snr_gamma > 0)) throw Error("objective.min_snr_gamma", "must be positive");
  if (!(c.flow_time_scale > 0)) throw Error("objective.flow_time_scale", "must be positive");
  if (c.target != Target::kFlow && schedule_.abar_values().back() == 0.0 &&
      (c.target == Target::kEps || c.weighting == LossWeighting::kSigmaInvSq))
    throw Error("objective.target",
                "a zero-terminal-SNR schedule needs target v (eps is undefined at abar = 0) "
                "and a weighting other than sigma_inv_sq");
}

double Objective::draw_unit(int64_t id, int64_t step) const {
  StreamRng rng(stream_key(config_.seed, RngPurpose::kTimestep, step, id));
  if (config_.sampling == TimestepSampling::kUniform) {
    double u;
    do u = rng.uniform();
    while (u == 0.0);
    return u;
  }
  const double z = config_.logit_mean + config_.logit_std * rng.normal();
  return 1.0 / (1.0 + std::exp(-z));
}

int64_t Objective::draw_timestep(int64_t id, int64_t step) const {
  const int64_t T = schedule_.size();
  return std::min<int64_t>(static_cast<int64_t>(draw_unit(id, step) * T), T - 1);
}

double Objective::draw_flow_time(int64_t id, int64_t step) const {
  return std::clamp(draw_unit(id, step), 1e-6, 1.0 - 1e-6);
}

torch::Tensor Objective::draw_noise(at::IntArrayRef shape, int64_t id, int64_t step) const {
  return torch::randn(shape, keyed_generator(stream_key(config_.seed, RngPurpose::kNoise, step, id)));
}

double Objective::loss_weight(double snr, double flow_t) const {
  switch (config_.weighting) {
    case LossWeighting::kNone: return 1.0;
    case LossWeighting::kSigmaInvSq: return snr;
    case LossWeighting::kMinSnr:
    case LossWeighting::kTruncatedSnr: {
      const double m =
          config_.weighting == LossWeighting::kMinSnr ? std::min(snr, config_.min_snr_gamma) : std::max(snr, 1.0);
      switch (config_.target) {  // (d x0 / d target)^2 turns an x0-space weight into a target-space one
        case Target::kEps: return m / snr;
        case Target::kV: return m / (snr + 1.0);
        case Target::kFlow: return m * flow_t * flow_t;
      }
    }
  }
  return 1.0;
}

NoisedBatch Objective::make_batch(const torch::Tensor& x0, const std::vector<int64_t>& ids, int64_t step) const {
  return build_batch(x0, ids, step, -1.0);
}

NoisedBatch Objective::make_eval_batch(const torch::Tensor& x0, const std::vector<int64_t>& ids, double unit_t) const {
  if (!(unit_t > 0.0 && unit_t < 1.0)) throw Error("eval timestep", "unit time must lie in (0, 1)");
  return build_batch(x0, ids, kEvalStep, unit_t);
}

NoisedBatch Objective::build_batch(const torch::Tensor& x0, const std::vector<int64_t>& ids, int64_t step,
                                   double fixed_unit_t) const {
  const bool fixed = fixed_unit_t > 0.0;
  const int64_t B = x0.size(0);
  if (static_cast<int64_t>(ids.size()) != B)
    throw Error("sample_ids", "has " + std::to_string(ids.size()) + " ids for a batch of " + std::to_string(B));
  const auto sample_shape = x0.sizes().slice(1);
  std::vector<torch::Tensor> noise(B);
  std::vector<double> coef_x0(B), coef_eps(B), t_model(B), t_unit(B), snr(B), weight(B);
  std::vector<uint8_t> keep_text(B), keep_control(B);
  const bool flow = config_.target == Target::kFlow;
  for (int64_t i = 0; i < B; ++i) {
    noise[i] = draw_noise(sample_shape, ids[i], step);
    double flow_t = 0;
    if (flow) {
      flow_t = fixed ? fixed_unit_t : draw_flow_time(ids[i], step);
      coef_x0[i] = 1.0 - flow_t;
      coef_eps[i] = flow_t;
      snr[i] = std::pow((1.0 - flow_t) / flow_t, 2);
      t_model[i] = flow_t * config_.flow_time_scale;
      t_unit[i] = flow_t;
    } else {
      const int64_t t =
          fixed ? std::llround(fixed_unit_t * static_cast<double>(schedule_.size() - 1)) : draw_timestep(ids[i], step);
      const double a = schedule_.abar(t);
      coef_x0[i] = std::sqrt(a);
      coef_eps[i] = std::sqrt(1.0 - a);
      snr[i] = schedule_.snr(t);
      t_model[i] = static_cast<double>(t);
      t_unit[i] = static_cast<double>(t) / (schedule_.size() - 1);
    }
    weight[i] = loss_weight(snr[i], flow_t);
    keep_text[i] = fixed || StreamRng(stream_key(config_.seed, RngPurpose::kTextDropout, step, ids[i])).uniform() >=
                                config_.p_drop_text;
    keep_control[i] =
        fixed || StreamRng(stream_key(config_.seed, RngPurpose::kControlDropout, step, ids[i])).uniform() >=
                     config_.p_drop_control;
  }
  auto column = [&](const std::vector<double>& v) {
    std::vector<int64_t> shape(x0.dim(), 1);
    shape[0] = B;
    return torch::tensor(v, torch::kFloat64).to(x0.options()).view(shape);
  };
  auto vec = [&](const std::vector<double>& v) { return torch::tensor(v, torch::kFloat64).to(torch::kFloat32); };
  const torch::Tensor eps = torch::stack(noise).to(x0.options());
  const torch::Tensor a = column(coef_x0), b = column(coef_eps);
  NoisedBatch out;
  out.x_t = a * x0 + b * eps;
  switch (config_.target) {
    case Target::kEps: out.target = eps; break;
    case Target::kV: out.target = a * eps - b * x0; break;
    case Target::kFlow: out.target = eps - x0; break;
  }
  out.weight = vec(weight).to(x0.device());
  out.t_model = vec(t_model).to(x0.device());
  out.t_unit = vec(t_unit).to(x0.device());
  out.snr = vec(snr).to(x0.device());
  out.keep_text =
      torch::tensor(std::vector<int64_t>(keep_text.begin(), keep_text.end())).to(torch::kBool).to(x0.device());
  out.keep_control =
      torch::tensor(std::vector<int64_t>(keep_control.begin(), keep_control.end())).to(torch::kBool).to(x0.device());
  return out;
}

torch::Tensor Objective::loss(const torch::Tensor& prediction, const NoisedBatch& b) const {
  if (prediction.sizes() != b.target.sizes()) throw Error("prediction", "shape does not match the target's");
  const torch::Tensor per_sample =
      (prediction.to(torch::kFloat32) - b.target.to(torch::kFloat32)).pow(2).flatten(1).mean(1);
  return (b.weight.to(per_sample.device()) * per_sample).mean();
}

}  // namespace dtrainer::diffusion
