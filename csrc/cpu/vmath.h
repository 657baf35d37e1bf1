// vmath.h: vector math for the csrc/cpu kernels of one ISA (include after common/simd.h):
// 2^x (vexp2), e^x, sigmoid, tanh, horizontal sum and max of a vector with shuffles.
// Include only from csrc/cpu/ files (compiled with PYAIML_ISA_NS defined).
#pragma once
#include <cstring>

#include <immintrin.h>

#include "common/simd.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

constexpr float LOG2E = 1.44269504088896341f;
constexpr float LN2 = 0.693147180559945309f;

// Vector 2^x: n = round(x), r = x - n in [-0.5, 0.5], 2^r by its degree-6 Taylor polynomial
// (relative error < 2e-7), times 2^n. x = -inf (masked scores) gives exactly 0; NaN stays
// NaN (so the caller sees it and reruns the naive kernel).
// AVX-512: vscalefps does the 2^n scaling and underflows to exactly 0 below ~-150.
static inline vf vexp2(vf x) {
#if defined(__AVX512F__)
  x = vmax(splat(-200.f), x);  // operand order keeps NaN (a > b ? a : b)
  const vf n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const vf lo = splat(-126.f);
  const vf x0 = x;
  x = vmin(splat(127.f), vmax(lo, x));  // operand order keeps NaN
  const vf n = (x + 12582912.f) - 12582912.f;
#endif
  const vf r = x - n;
  vf p = splat(1.5403530393381608e-4f);
  p = p * r + 1.3333558146428443e-3f;
  p = p * r + 9.6181291076284772e-3f;
  p = p * r + 5.5504108664821580e-2f;
  p = p * r + 2.4022650695910071e-1f;
  p = p * r + 6.9314718055994531e-1f;
  p = p * r + 1.f;
#if defined(__AVX512F__)
  return _mm512_scalef_ps(p, n);
#else
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf sc;
  std::memcpy(&sc, &e, sizeof sc);
  return x0 < lo ? vf{} : p * sc;
#endif
}

// Horizontal sum / max with shuffles (the generic lane loop costs ~4x more).
static inline float fsum(vf v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps(v);
#elif defined(__AVX2__)
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
#else
  __m128 x = v;
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
#endif
}
static inline float fmax_(vf v) {
#if defined(__AVX512F__)
  return _mm512_reduce_max_ps(v);
#elif defined(__AVX2__)
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
#else
  __m128 x = v;
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
#endif
}

// e^x by range reduction: x = n ln2 + r, |r| <= ln2/2 (ln2 in two parts, the first product
// exact), degree-7 Taylor polynomial, 2^n through the exponent bits; x clamped to the float
// range (NaN stays NaN). Relative error a few ulps.
static inline vf vexp(vf x) {
  x = vmin(splat(88.3762626647949f), vmax(splat(-87.3365447504f), x));  // NaN stays NaN
  const vf t = x * 1.44269504088896341f;
  const vf n = (t + 12582912.f) - 12582912.f;  // round to nearest (|t| < 2^22)
  vf r = x - n * 0.693145751953125f;            // ln2 split in two: exact first product
  r = r - n * 1.428606765330187e-06f;
  vf p = splat(1.f / 5040.f);
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf sc;
  std::memcpy(&sc, &e, sizeof sc);
  return p * sc;
}

// 1 / (1 + e^-x).
static inline vf vsigmoid(vf x) { return 1.f / (1.f + vexp(-x)); }

// tanh: 1 - 2 / (e^(2|x|) + 1) with the sign restored, and its odd Taylor series to x^15
// below |x| = 0.5, where that form cancels: relative error a few ulps everywhere, +-1 beyond
// |x| = 20, NaN stays NaN.
static inline vf vtanh(vf x) {
  vi bits;
  std::memcpy(&bits, &x, sizeof bits);
  const vi sign = bits & int(0x80000000u);
  vi abits = bits & 0x7fffffff;
  vf a;
  std::memcpy(&a, &abits, sizeof a);
  const vf big = 1.f - 2.f / (vexp(vmin(splat(20.f), a) * 2.f) + 1.f);  // operand order keeps NaN
  const vf a2 = a * a;
  vf p = splat(-929569.f / 638512875.f);
  p = p * a2 + 21844.f / 6081075.f;
  p = p * a2 + -1382.f / 155925.f;
  p = p * a2 + 62.f / 2835.f;
  p = p * a2 + -17.f / 315.f;
  p = p * a2 + 2.f / 15.f;
  p = p * a2 + -1.f / 3.f;
  const vf small = a + a * a2 * p;
  vf y = a < 0.5f ? small : big;
  vi ybits;
  std::memcpy(&ybits, &y, sizeof ybits);
  ybits |= sign;
  std::memcpy(&y, &ybits, sizeof y);
  return y;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
