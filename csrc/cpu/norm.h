// norm.h: LayerNorm and RMSNorm over the last axis of float32 rows, forward only (the
// normalisation layers of language models at inference):
//   layer:  y = (x - mean) / sqrt(var + eps) * w + b   (var biased, as torch.nn.LayerNorm)
//   rms:    y = x / sqrt(mean(x^2) + eps) * w           (as Llama's RMSNorm)
// Sums run in float32 vector lanes in one fixed order per row (independent of the number of
// rows or threads), the mean first, then the centred squares.
//
// layer_norm_backward: the gradients of the layer norm from its output gradient g and its
// input x (mean and 1/std recomputed per row): dx = rstd (d - mean(d) - xhat mean(d xhat))
// with d = g w, dw = sum over rows of g xhat, db = sum of g. The weight sums go by fixed
// chunks of 32 rows, added in chunk order, so they do not depend on the thread count.
//
// Not here: RMSNorm's gradient, other axes, float64.
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

struct NormBackArgs {
  int64_t rows = 0, n = 0;
  const float* g = nullptr;  // (rows, n), contiguous
  const float* x = nullptr;  // (rows, n), contiguous
  const float* w = nullptr;  // optional (n,)
  float eps = 1e-5f;
  float* dx = nullptr;       // optional (rows, n)
  float* dw = nullptr;       // optional (n,)
  float* db = nullptr;       // optional (n,)
};

struct NormKernels {
  void (*norm)(const NormArgs&);  // threaded over rows
  void (*layer_norm_backward)(const NormBackArgs&);  // threaded over chunks of rows
};

PYAIML_KERNEL_TABLE(NormKernels, norm_kernels)

}  // namespace pyaiml
