#pragma once
// The keys of metrics.jsonl that more than one program reads: the trainer writes them
// (train/metrics_log.h), fitlaws reads the scaling axes and metrics (analysis/table.h), the tests
// and job scripts read the kinds. One definition, so a rename cannot split writer and reader.

namespace dtrainer::metric_keys {

// The scaling axes every record carries ([S1]'s N, C, D) and where it was made.
inline constexpr const char* kStep = "step";
inline constexpr const char* kSamples = "samples";
inline constexpr const char* kParams = "params";                    // N
inline constexpr const char* kComputeGflops = "compute_gflops";     // C: 3 x 2 x linear/conv MACs x samples, GFLOPs
inline constexpr const char* kImageNounPairs = "image_noun_pairs";  // D

// Metrics.
inline constexpr const char* kLoss = "loss";            // training records
inline constexpr const char* kEvalLoss = "eval_loss";   // held-out records ("eval": true)
inline constexpr const char* kAlignment = "alignment";  // alignment records (the score)

// Record kinds: a held-out record has "eval": true; an alignment record has the score.
inline constexpr const char* kEvalRecord = "eval";

}  // namespace dtrainer::metric_keys
