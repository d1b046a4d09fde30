#include "dtrainer/parallel/sharding_policy.h"

#include <algorithm>

namespace dtrainer::parallel {

const NameTable<ShardingStrategy>& name_table(ShardingStrategy) {
  static const NameTable<ShardingStrategy> t{{"replicate", ShardingStrategy::kReplicate},
                                             {"zero1", ShardingStrategy::kZero1},
                                             {"zero2", ShardingStrategy::kZero2},
                                             {"zero3", ShardingStrategy::kZero3}};
  return t;
}
ShardingStrategy parse_sharding_strategy(const std::string& field, const std::string& text) {
  return name_table(ShardingStrategy{}).parse(field, text);
}
const char* sharding_strategy_name(ShardingStrategy s) { return name_table(s).name(s); }

const NameTable<ComputeDtype>& name_table(ComputeDtype) {
  static const NameTable<ComputeDtype> t{{"fp32", ComputeDtype::kFp32}, {"bf16", ComputeDtype::kBf16}};
  return t;
}

ShardingPolicy ShardingPolicy::of(ShardingStrategy s) {
  ShardingPolicy p;
  switch (s) {
    case ShardingStrategy::kReplicate: break;
    case ShardingStrategy::kZero1: p.shard_optimizer_state = true; break;
    case ShardingStrategy::kZero2: p.shard_optimizer_state = p.shard_gradients = true; break;
    case ShardingStrategy::kZero3:
      p.shard_optimizer_state = p.shard_gradients = p.shard_parameters = true;
      break;
  }
  return p;
}

UnitBufferSizes ShardingPolicy::buffers(int64_t padded, int world, bool low_precision, int averages) const {
  const int64_t shard = padded / world;
  const int64_t state = shard_optimizer_state ? shard : padded;
  UnitBufferSizes b;
  b.full = shard_parameters ? 0 : padded;
  b.gathered = shard_parameters ? padded : 0;
  // fp32 compute: the masters are the full parameters themselves, or (sharded optimizer state) a
  // view of this rank's part of them; only sharded parameters keep their master shard apart.
  b.master_views_full = !low_precision && !shard_parameters;
  b.master = b.master_views_full ? 0 : state;
  b.compute_shard = low_precision && shard_optimizer_state ? shard : 0;
  b.grad = shard_gradients ? shard : padded;
  b.packed_grad = shard_gradients ? padded : 0;
  b.optimizer = state;
  b.ema = averages > 0 ? state : 0;
  return b;
}

ShardedMemory ShardingPolicy::memory(const std::vector<int64_t>& padded_units, int world, bool low_precision,
                                     int averages) const {
  const int64_t compute_bytes = low_precision ? 2 : 4;
  ShardedMemory m;
  for (const int64_t padded : padded_units) {
    const UnitBufferSizes b = buffers(padded, world, low_precision, averages);
    m.padded_elements += padded;
    m.param_bytes += compute_bytes * (b.full + b.compute_shard) + 4 * b.master;
    m.grad_bytes += 4 * b.grad;
    m.optimizer_state_bytes += 4 * 2 * b.optimizer;
    m.ema_bytes += 4 * b.ema * averages;
    m.transient_unit_bytes = std::max({m.transient_unit_bytes, compute_bytes * b.gathered, 4 * b.packed_grad});
  }
  return m;
}

}  // namespace dtrainer::parallel
