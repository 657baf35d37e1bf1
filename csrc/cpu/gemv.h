// gemv.h: y = x W (+ bias) for a few rows of x (the decode step of a language model: one
// token per sequence, so M = batch), with W stored (K, N) row-major in float32 or as int8 with
// one float16 scale per 32 consecutive rows of a column (Q8_0 weight-only quantization:
// W(k, n) = q(k, n) * scale(k / 32, n)). These shapes are memory-bound: every weight is read
// once per call, so the kernels stream W in column panels, split the columns over the pool and
// keep all M rows' partial sums in registers; they never copy W. pyaiml.llm keeps its weights
// packed in panels of 64 columns (float32 and int8), which each thread reads as one stream.
// int8 takes any number of rows (prefill too): 8 at a time over each cache-resident band of W;
// the W8A8 kernel quantizes x per row and 32-block as well (exact integer block sums, AVX-512
// VNNI where the CPU has it).
//
// Not here: the float32 GEMM for many rows (gemm.h; it reads the float32 panels too), other
// block sizes or quantization schemes.
// Tests: tests/test_gemv.py against NumPy float64, every ISA via PYAIML_ISA.
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

struct GemvArgs {
  int64_t M = 0, K = 0, N = 0;
  const float* x = nullptr;     // x(i, k) = x[i * ldx + k * xk]
  int64_t ldx = 0, xk = 1;
  const float* w = nullptr;     // float32 W(k, n) = w[k * ldw + n]
  const int8_t* q = nullptr;    // or int8 q(k, n) = q[k * ldw + n] ...
  const uint16_t* s = nullptr;  // ... with float16 bits scale(b, n) = s[b * ldw + n], b = k / 32
  int64_t ldw = 0;
  const float* bias = nullptr;  // optional, (N,)
  float* y = nullptr;           // y(i, n) = y[i * ldy + n]
  int64_t ldy = 0;
};

constexpr int kQ8Block = 32;
constexpr int kGemvMaxRows = 8;  // rows the streaming kernels take in one pass

// int8 W packed in panels of kQ8Panel columns (pyaiml.llm.quant.pack_q8): panel p holds
// columns [64p, 64p + 64) as K consecutive rows of 64 int8 (q[(p * K + k) * 64 + c] =
// q(k, 64p + c)) and its scales as K/32 rows of 64 float16 (s[(p * K/32 + b) * 64 + c]);
// columns past N are zero. A thread's whole panels are then one sequential stream of memory.
constexpr int64_t kQ8Panel = 64;
struct GemvPackedArgs {
  int64_t M = 0, K = 0, N = 0;
  const float* x = nullptr;  // x(i, k) = x[i * ldx + k]
  int64_t ldx = 0;
  const int8_t* q = nullptr;    // (ceil(N / 64), K, 64)
  const uint16_t* s = nullptr;  // (ceil(N / 64), K / 32, 64) float16 bits
  const float* bias = nullptr;  // optional, (N,)
  float* y = nullptr;           // y(i, n) = y[i * ldy + n]
  int64_t ldy = 0;
};

// float32 W packed in panels of kPanel columns (pyaiml.llm's float32 layout, the same panels
// as int8's): w[(p * K + k) * 64 + c] = W(k, 64p + c), columns past N zero. The GEMM reads the
// same layout (GemmArgs::bps), so one copy of W serves prefill and decode.
constexpr int64_t kPanel = 64;
static_assert(kPanel == kQ8Panel, "the float32 and int8 layouts share their panels (and the kernels' driver)");
struct GemvF32PackedArgs {
  int64_t M = 0, K = 0, N = 0;  // M <= kGemvMaxRows per chunk; any M is taken 8 rows at a time
  const float* x = nullptr;     // x(i, k) = x[i * ldx + k]
  int64_t ldx = 0;
  const float* w = nullptr;     // (ceil(N / 64), K, 64)
  const float* bias = nullptr;  // optional, (N,)
  float* y = nullptr;           // y(i, n) = y[i * ldy + n]
  int64_t ldy = 0;
};

struct GemvKernels {
  void (*gemv_f32)(const GemvArgs&);  // M <= kGemvMaxRows, threaded
  void (*gemv_q8)(const GemvArgs&);   // M <= kGemvMaxRows, K % 32 == 0, threaded
  void (*gemm_q8)(const GemvArgs&);   // any M, K % 32 == 0, threaded
  void (*gemm_q8_packed)(const GemvPackedArgs&);  // the same on packed panels
  void (*gemv_f32_packed)(const GemvF32PackedArgs&);  // float32 panels, threaded (few rows: GEMM beyond)
  // W8A8: the packed int8 panels against x quantized per row and 32-block (gemv.cpp), any M
  void (*gemm_w8a8_packed)(const GemvPackedArgs&);
};

PYAIML_KERNEL_TABLE(GemvKernels, gemv_kernels)

}  // namespace pyaiml
