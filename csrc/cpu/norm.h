// norm.h: LayerNorm and RMSNorm over the last axis of float32 rows, forward only (the
// normalisation layers of language models at inference):
//   layer:  y = (x - mean) / sqrt(var + eps) * w + b   (var biased, as torch.nn.LayerNorm)
//   rms:    y = x / sqrt(mean(x^2) + eps) * w           (as Llama's RMSNorm)
// Sums run in float32 vector lanes in one fixed order per row (independent of the number of
// rows or threads), the mean first, then the centred squares.
//
// Not here: gradients (pyaiml.autograd's layer_norm for training), other axes, float64.
// Tests: tests/test_norm.py against NumPy float64 and torch.
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

struct NormArgs {
  int64_t rows = 0, n = 0;
  const float* x = nullptr;  // x(r, i) = x[r * ldx + i]
  int64_t ldx = 0;
  const float* w = nullptr;  // optional (n,)
  const float* b = nullptr;  // optional (n,), layer norm only
  float eps = 1e-5f;
  bool rms = false;
  float* y = nullptr;        // y(r, i) = y[r * n + i]
};

struct NormKernels {
  void (*norm)(const NormArgs&);  // threaded over rows
};

PYAIML_KERNEL_TABLE(NormKernels, norm_kernels)

}  // namespace pyaiml
