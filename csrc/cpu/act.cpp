// act.cpp: GELU (tanh form), SwiGLU rows and RoPE of q and k (act.h), per ISA.
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

constexpr int64_t GRAIN = 1 << 16;  // elements per task: a batch of decode rows runs on one thread

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

namespace {

// One head: products and the sum rounded separately, as NumPy's x1 * c - x2 * s (no FMA
// contraction here, so that every backend gives the same bits).
__attribute__((optimize("fp-contract=off"))) void rope_head(const float* x, const float* c, const float* s,
                                                              float* o, int64_t half) {
  int64_t i = 0;
  for (; i + VL <= half; i += VL) {
    const vf x1 = loadu(x + i), x2 = loadu(x + half + i), cv = loadu(c + i), sv = loadu(s + i);
    const vf a = x1 * cv, b = x2 * sv, d = x2 * cv, e = x1 * sv;
    storeu(o + i, a - b);
    storeu(o + half + i, d + e);
  }
  for (; i < half; ++i) {
    const float a = x[i] * c[i], b = x[half + i] * s[i], d = x[half + i] * c[i], e = x[i] * s[i];
    o[i] = a - b;
    o[half + i] = d + e;
  }
}

}  // namespace

void rope_qk(const float* qkv, int64_t B, int64_t L, int64_t ldrow, const float* cos, const float* sin, int64_t H,
             int64_t Hk, int64_t D, float* q, float* k) {
  const int64_t half = D / 2;
  parallel_for(B * L, std::max<int64_t>(1, GRAIN / std::max<int64_t>((H + Hk) * D, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / L, l = r % L;
      const float* x = qkv + r * ldrow;
      const float* c = cos + r * half;
      const float* s = sin + r * half;
      for (int64_t h = 0; h < H; ++h) rope_head(x + h * D, c, s, q + ((b * H + h) * L + l) * D, half);
      for (int64_t h = 0; h < Hk; ++h) rope_head(x + (H + h) * D, c, s, k + (r * Hk + h) * D, half);
    }
  });
}

// Per row: the maximum, e^(x - max) by vmath's vexp (a few ulps), the sum of the vectors'
// lanes then of the tail, then a division by it. A NaN anywhere in the row makes the row NaN
// with no check of its own: its e^ is NaN (vexp keeps NaN), so the sum and every quotient are.
void softmax_rows(const float* x, float* y, int64_t rows, int64_t n) {
  parallel_for(rows, std::max<int64_t>(1, GRAIN / std::max<int64_t>(n, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      const int64_t nv = n / VL * VL;
      const int tail = static_cast<int>(n - nv);
      float mx = -INFINITY;
      if (nv) {
        vf m = loadu(xr);
        for (int64_t i = VL; i < nv; i += VL) m = vmax(m, loadu(xr + i));
        mx = fmax_(m);
      }
      for (int64_t i = nv; i < n; ++i) mx = std::max(mx, xr[i]);
      const vf mv = splat(mx);
      vf sv{};
      for (int64_t i = 0; i < nv; i += VL) {
        const vf e = vexp(loadu(xr + i) - mv);
        storeu(yr + i, e);
        sv += e;
      }
      float sum = nv ? fsum(sv) : 0.f;
      if (tail) {
        const vf e = vexp(loadu_n(xr + nv, tail) - mv);
        storeu_n(yr + nv, e, tail);
        float t[VL];
        storeu(t, e);
        for (int i = 0; i < tail; ++i) sum += t[i];
      }
      const vf sinv = splat(sum);
      for (int64_t i = 0; i < nv; i += VL) storeu(yr + i, loadu(yr + i) / sinv);
      for (int64_t i = nv; i < n; ++i) yr[i] /= sum;
    }
  });
}

const ActKernels& act_kernels() {
  static const ActKernels k{&gelu_tanh, &swiglu, &rope_qk, &softmax_rows};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
