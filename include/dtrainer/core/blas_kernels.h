#pragma once
// OpenBLAS's kernels for this CPU. OpenBLAS (Debian's is built with DYNAMIC_ARCH) picks its kernels
// from the CPU's family and model when it loads; a CPU newer than the OpenBLAS release is not in its
// table, and it falls back to generic SSE3 ("Prescott") kernels even where the CPU has AVX-512.
// Measured on this project's CPU machines (Xeon family 6 model 207, OpenBLAS 0.3.21): a 1024^3 fp32
// matmul at 27 GFLOP/s on one core instead of 115-141 with the AVX-512 kernels, which made every
// linear layer of a training step 4-5x slower (bench/RESULTS.md).
//
// select_native_blas_kernels() asks OpenBLAS (found at run time; nothing happens with another BLAS)
// which kernels it chose, and when they use a narrower instruction set than the CPU supports, it
// re-selects the kernels of that instruction set through OpenBLAS's own OPENBLAS_CORETYPE mechanism:
// AVX-512 with BF16 -> Cooperlake, AVX-512 -> SkylakeX, AVX2 + FMA -> Haswell. A user's
// OPENBLAS_CORETYPE is always left as it is. Called once by the programs' main(), before any BLAS
// call (libraries never change process-wide state themselves); it changes the kernels, not the maths
// (the same products, rounded as the chosen kernels round them).
#include <string>

namespace dtrainer {

struct BlasKernels {
  std::string library;  // "OpenBLAS 0.3.21 ..." (its configuration string), or "" when it is not OpenBLAS
  std::string path;     // the file it was loaded from (which build: .../openblas-openmp/libopenblas.so.0)
  std::string chosen;   // the kernels OpenBLAS chose when it loaded ("Prescott", "SkylakeX", ...)
  std::string running;  // the kernels in use now
  std::string note;     // why they differ, or why they were left (empty when nothing was to be done)
};

BlasKernels select_native_blas_kernels();

// One line for a program's start-up log: "OpenBLAS kernels SkylakeX (...)".
std::string describe(const BlasKernels& k);

}  // namespace dtrainer
