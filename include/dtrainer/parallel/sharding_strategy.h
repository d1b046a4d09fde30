#pragma once
// The sharding strategies and compute dtypes by name (parallel/sharded_params.h says what each
// strategy shards), torch-free, each with its one name table.

#include <string>

#include "dtrainer/core/name_table.h"

namespace dtrainer::parallel {

enum class ShardingStrategy { kReplicate, kZero1, kZero2, kZero3 };
const NameTable<ShardingStrategy>& name_table(ShardingStrategy);  // replicate | zero1 | zero2 | zero3
ShardingStrategy parse_sharding_strategy(const std::string& field, const std::string& text);
const char* sharding_strategy_name(ShardingStrategy s);

// What the model computes in: fp32 (the masters themselves) or bf16 (a compute copy of them).
enum class ComputeDtype { kFp32, kBf16 };
const NameTable<ComputeDtype>& name_table(ComputeDtype);  // fp32 | bf16

}  // namespace dtrainer::parallel
