// gemm.h: single-precision GEMM, C = A B (+ beta C) (+ bias) (relu), with arbitrary element
// strides for A and B (transposed, sliced and negative-stride views need no copies) and a
// row-major C. Blocked in the BLIS way: B packed into KC x NR micro-panels, A packed into
// MR x KC micro-panels (or read in place when K is small), register-blocked micro-kernels
// written once with GCC vector extensions and compiled per ISA. Conv and attention call
// sgemm_st on their own tiles from inside parallel regions.
//
// Not here: float64 (NumPy handles it), complex, batched broadcasting (ops/ does that).
// Tests: tests/test_matmul.py against NumPy float64, every ISA via PYAIML_ISA.
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;  // A(i, k) = A[i * rsa + k * csa]
  int64_t rsa = 0, csa = 0;
  const float* B = nullptr;  // B(k, j) = B[k * rsb + j * csb]
  int64_t rsb = 0, csb = 0;
  // B in column panels instead (bps > 0): B(k, j) = B[(j / rsb) * bps + k * rsb + j % rsb], panels
  // rsb columns wide (a multiple of the micro-tile's NR; gemv.h kPanel), bps floats apart,
  // columns past N present (zero): pyaiml.llm's float32 weights. csb must be 1.
  int64_t bps = 0;
  float* C = nullptr;        // C(i, j) = C[i * ldc + j]
  int64_t ldc = 0;
  float beta = 0.f;          // 0: C is overwritten and never read; 1: accumulate into C
  const float* bias_n = nullptr;  // optional: C(i, j) += bias_n[j]
  const float* bias_m = nullptr;  // optional: C(i, j) += bias_m[i]
  bool relu = false;              // optional: C = max(C, 0) after the bias
  // optional: set to 1 when any C(i, j), before bias and relu, is NaN or inf. A NaN or inf in
  // A or B always reaches C (inf * 0 is NaN), so callers check their inputs only then.
  int* nonfinite = nullptr;
};

struct GemmKernels {
  void (*sgemm)(const GemmArgs&);     // threaded over the pool
  void (*sgemm_st)(const GemmArgs&);  // single thread, for use on tiles inside parallel regions
  void (*sgemm_naive)(const GemmArgs&);
  int mr, nr;                         // register tile of this ISA
};

PYAIML_KERNEL_TABLE(GemmKernels, gemm_kernels)


}  // namespace pyaiml

#ifdef PYAIML_ISA_NS
namespace pyaiml {
namespace PYAIML_ISA_NS {
// Direct calls for other kernels compiled for the same ISA.
void sgemm(const GemmArgs& a);
void sgemm_st(const GemmArgs& a);
void sgemm_naive(const GemmArgs& a);
}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
#endif
