// simd.h: the vector type of the ISA a csrc/cpu/ file is being compiled for, through GCC
// vector extensions (one source, zmm/ymm/xmm code per build), plus unaligned load/store
// (the only loads and stores of vf: element pointers handed in by the bindings are
// element-aligned, see bindings/common.h, not vector-aligned).
// Include only from csrc/cpu/ files (they are compiled with PYAIML_ISA_NS defined).
#pragma once
#include <cstring>

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
