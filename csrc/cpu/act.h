// act.h: the activations of language-model MLPs at inference, float32, forward only:
//   gelu_tanh:  y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GPT-2's "gelu_new")
//   swiglu:     y[r, i] = silu(x[r, i]) * x[r, I + i], silu(g) = g / (1 + e^-g)
//               (Llama's gate and up projections side by side in one row of 2I)
//   rope_qk:    rotate-half RoPE of the q and k heads of a fused qkv projection (B, L, W):
//               for each head x (D values) and i < D/2, with the row's tables c, s (D/2):
//               o[i] = x[i] c[i] - x[i + D/2] s[i], o[i + D/2] = x[i + D/2] c[i] + x[i] s[i],
//               products and difference rounded separately (NumPy's bits); q is written
//               (B, H, L, D) (attention's layout), k (B, L, Hk, D)
//   softmax_rows: y[r] = e^(x[r] - max x[r]) / sum, per row of n values (in place allowed;
//               a classifier's head in Sequential's native inference plan)
// Vectorised with vmath.h's 2^x; threaded over chunks.
// Not here: gradients, other activations (NumPy in pyaiml.llm.layers).
// Tests: tests/test_act.py against NumPy float64.
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

struct ActKernels {
  void (*gelu_tanh)(const float* x, float* y, int64_t n);
  void (*swiglu)(const float* x, int64_t ldx, float* y, int64_t rows, int64_t I);
  void (*rope_qk)(const float* qkv, int64_t B, int64_t L, int64_t ldrow, const float* cos, const float* sin,
                  int64_t H, int64_t Hk, int64_t D, float* q, float* k);
  void (*softmax_rows)(const float* x, float* y, int64_t rows, int64_t n);
};

PYAIML_KERNEL_TABLE(ActKernels, act_kernels)

}  // namespace pyaiml
