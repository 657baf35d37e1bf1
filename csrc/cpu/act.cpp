// act.cpp: GELU (tanh form) and SwiGLU rows (act.h), per ISA.
// Tests: tests/test_act.py.
#include "cpu/act.h"

#include <algorithm>
#include <cmath>

#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/vmath.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

constexpr float K0 = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float K1 = 0.044715f;

inline vf gelu_v(vf x) { return 0.5f * x * (1.f + vtanh(K0 * (x + K1 * x * x * x))); }
inline float gelu_s(float x) { return 0.5f * x * (1.f + std::tanh(K0 * (x + K1 * x * x * x))); }
inline vf silu_v(vf g) { return g / (1.f + vexp2(g * -LOG2E)); }
inline float silu_s(float g) { return g / (1.f + std::exp(-g)); }

constexpr int64_t GRAIN = 1 << 14;  // elements per task

}  // namespace

void gelu_tanh(const float* x, float* y, int64_t n) {
  parallel_for((n + VL - 1) / VL, GRAIN / VL, [&](int64_t b, int64_t e) {
    for (int64_t v = b; v < e; ++v) {
      const int64_t i = v * VL;
      if (i + VL <= n)
        storeu(y + i, gelu_v(loadu(x + i)));
      else
        for (int64_t j = i; j < n; ++j) y[j] = gelu_s(x[j]);
    }
  });
}

void swiglu(const float* x, int64_t ldx, float* y, int64_t rows, int64_t I) {
  parallel_for(rows, std::max<int64_t>(1, GRAIN / std::max<int64_t>(I, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* g = x + r * ldx;
      const float* u = g + I;
      float* o = y + r * I;
      int64_t i = 0;
      for (; i + VL <= I; i += VL) storeu(o + i, silu_v(loadu(g + i)) * loadu(u + i));
      for (; i < I; ++i) o[i] = silu_s(g[i]) * u[i];
    }
  });
}

const ActKernels& act_kernels() {
  static const ActKernels k{&gelu_tanh, &swiglu};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
