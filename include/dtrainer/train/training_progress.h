#pragma once
// How far a run has come: the counters a checkpoint carries (meta.json's "trainer" object) and
// every metrics record reports as its scaling axes.

#include <cstdint>

#include <nlohmann/json.hpp>

#include "dtrainer/core/metric_keys.h"

namespace dtrainer::train {

struct TrainingProgress {
  int64_t step = 0;             // optimizer steps taken
  int64_t samples = 0;          // samples seen (step x global batch)
  double compute_gflops = 0;    // [S1]'s C so far
  double image_noun_pairs = 0;  // [S1]'s D so far
  int64_t bad_steps = 0;        // steps skipped for a non-finite loss or gradient
  int64_t skipped_samples = 0;  // samples dropped by skip_bad_samples

  nlohmann::json to_json() const {
    return {{"step", step},
            {"samples", samples},
            {"compute_gflops", compute_gflops},
            {"image_noun_pairs", image_noun_pairs},
            {"bad_steps", bad_steps},
            {"skipped_samples", skipped_samples}};
  }
  // One optimizer step of `global_batch` samples (`skipped` of them dropped as bad) and
  // `image_noun_pairs` pairs, each sample costing `gflops_per_sample` of [S1]'s C.
  void add_step(int64_t global_batch, double gflops_per_sample, double pairs, int64_t skipped) {
    step += 1;
    samples += global_batch;
    skipped_samples += skipped;
    compute_gflops += gflops_per_sample * static_cast<double>(global_batch);
    image_noun_pairs += pairs;
  }
  // `record` with the scaling axes every metrics record carries (fitlaws reads any metric with
  // them): its step, samples, C, D, and the model's parameter count N.
  nlohmann::json with_axes(nlohmann::json record, int64_t params) const {
    record[metric_keys::kStep] = step;
    record[metric_keys::kSamples] = samples;
    record[metric_keys::kComputeGflops] = compute_gflops;
    record[metric_keys::kImageNounPairs] = image_noun_pairs;
    record[metric_keys::kParams] = params;
    return record;
  }
  // Checkpoints before skipped_samples existed lack it (0).
  static TrainingProgress from_json(const nlohmann::json& j) {
    TrainingProgress p;
    p.step = j.at("step").get<int64_t>();
    p.samples = j.at("samples").get<int64_t>();
    p.compute_gflops = j.at("compute_gflops").get<double>();
    p.image_noun_pairs = j.at("image_noun_pairs").get<double>();
    p.bad_steps = j.at("bad_steps").get<int64_t>();
    p.skipped_samples = j.value("skipped_samples", int64_t{0});
    return p;
  }
};

}  // namespace dtrainer::train
