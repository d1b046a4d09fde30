#pragma once
// How far a run has come: the counters a checkpoint carries (meta.json's "trainer" object) and
// every metrics record reports as its scaling axes.

#include <cstdint>

#include <nlohmann/json.hpp>

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
