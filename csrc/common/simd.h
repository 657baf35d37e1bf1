// simd.h: the vector type of the ISA a csrc/cpu/ file is being compiled for, through GCC
// vector extensions (one source, zmm/ymm/xmm code per build), plus unaligned load/store
// (the only loads and stores of vf: element pointers handed in by the bindings are
// element-aligned, see bindings/common.h, not vector-aligned).
// Include only from csrc/cpu/ files (they are compiled with PYAIML_ISA_NS defined).
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace pyaiml {
namespace PYAIML_ISA_NS {

#if defined(__AVX512F__)
constexpr int VL = 16;
#elif defined(__AVX2__)
constexpr int VL = 8;
#else
constexpr int VL = 4;
#endif

typedef float vf __attribute__((vector_size(VL * 4)));
// Alignment 1: a load or store through vf_u is defined at any address (vmovups / movups,
// the same instructions as with alignment 4). The kernels never assume vector alignment.
typedef float vf_u __attribute__((vector_size(VL * 4), aligned(1)));
typedef int vi __attribute__((vector_size(VL * 4)));

static inline vf loadu(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
static inline void storeu(float* p, vf v) { *reinterpret_cast<vf_u*>(p) = v; }
// The first n (0 < n < VL) lanes from/to memory; the other lanes load as 0 and are not
// written. Masked instructions where the ISA has them: no byte past p + n is touched.
#if defined(__AVX512F__)
static inline vf loadu_n(const float* p, int n) { return (vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p); }
static inline void storeu_n(float* p, vf v, int n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v); }
#elif defined(__AVX2__)
static inline __m256i lane_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf loadu_n(const float* p, int n) { return (vf)_mm256_maskload_ps(p, lane_mask(n)); }
static inline void storeu_n(float* p, vf v, int n) { _mm256_maskstore_ps(p, lane_mask(n), (__m256)v); }
#else
static inline vf loadu_n(const float* p, int n) {
  vf v{};
  for (int i = 0; i < n; ++i) v[i] = p[i];
  return v;
}
static inline void storeu_n(float* p, vf v, int n) {
  for (int i = 0; i < n; ++i) p[i] = v[i];
}
#endif
// A non-temporal store of v at p, which must be VL * 4-byte aligned (plain storeu below
// AVX2): the line goes to memory without being read for ownership first. For outputs that
// leave the cache anyway; the writing thread calls stream_fence before its work counts as
// done (the pool's join orders only ordinary stores).
static inline void stream(float* p, vf v) {
#if defined(__AVX512F__)
  _mm512_stream_ps(p, (__m512)v);
#elif defined(__AVX2__)
  _mm256_stream_ps(p, (__m256)v);
#else
  storeu(p, v);
#endif
}
static inline void stream_fence() {
#if defined(__AVX2__)
  _mm_sfence();
#endif
}
// Whether p may take stream(): vector-aligned.
static inline bool stream_aligned(const void* p) { return (reinterpret_cast<uintptr_t>(p) & (VL * 4 - 1)) == 0; }

static inline vf splat(float x) { return vf{} + x; }
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
static inline vf vmin(vf a, vf b) { return a < b ? a : b; }

static inline float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < VL; ++i) s += v[i];
  return s;
}
static inline float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < VL; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
