// norm.cpp: LayerNorm / RMSNorm rows (norm.h), per ISA.
// Tests: tests/test_norm.py.
#include "cpu/norm.h"

#include <algorithm>
#include <cmath>

#include "common/parallel.h"
#include "common/simd.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

// Sum of a row: VL lanes accumulated in order, then the lanes and the tail in order.
inline float row_sum(const float* x, int64_t n, float shift, bool square) {
  vf acc = vf{};
  const vf s = splat(shift);
  int64_t i = 0;
  for (; i + VL <= n; i += VL) {
    const vf d = loadu(x + i) - s;
    acc += square ? d * d : d;
  }
  float r = 0.f;
  for (int l = 0; l < VL; ++l) r += acc[l];
  for (; i < n; ++i) {
    const float d = x[i] - shift;
    r += square ? d * d : d;
  }
  return r;
}

void one_row(const NormArgs& a, const float* x, float* y) {
  const int64_t n = a.n;
  float mean = 0.f, scale;
  if (a.rms) {
    scale = 1.f / std::sqrt(row_sum(x, n, 0.f, true) / static_cast<float>(n) + a.eps);
  } else {
    mean = row_sum(x, n, 0.f, false) / static_cast<float>(n);
    scale = 1.f / std::sqrt(row_sum(x, n, mean, true) / static_cast<float>(n) + a.eps);
  }
  const vf m = splat(mean), s = splat(scale);
  int64_t i = 0;
  for (; i + VL <= n; i += VL) {
    vf v = (loadu(x + i) - m) * s;
    if (a.w) v *= loadu(a.w + i);
    if (a.b) v += loadu(a.b + i);
    storeu(y + i, v);
  }
  for (; i < n; ++i) {
    float v = (x[i] - mean) * scale;
    if (a.w) v *= a.w[i];
    if (a.b) v += a.b[i];
    y[i] = v;
  }
}

}  // namespace

void norm(const NormArgs& a) {
  if (a.rows <= 0 || a.n <= 0) return;
  // ~16K elements per task: a decode row runs on the caller alone
  const int64_t grain = std::max<int64_t>(1, 16384 / a.n);
  parallel_for(a.rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) one_row(a, a.x + r * a.ldx, a.y + r * a.n);
  });
}

const NormKernels& norm_kernels() {
  static const NormKernels k{&norm};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
