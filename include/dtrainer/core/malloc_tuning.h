#pragma once
// Process-wide allocator tuning for programs that stream large tensors (the loader's padded
// text batches are tens of MB each). By default glibc serves such blocks with fresh mmap()s
// and unmaps them on free, so every batch page-faults and zero-fills its memory again (measured:
// a third of the loader's time). Keeping large blocks on the heap lets them be reused.
// Called once by the programs' main(); libraries never change process-wide state themselves.

namespace dtrainer {

void tune_malloc_for_streaming();

}  // namespace dtrainer
