// gemv.cpp: streaming y = x W (+ bias) for M <= 8 rows, float32 or Q8_0 int8 W (gemv.h), and
// the int8 GEMM for more rows. Compiled once per ISA.
//
// Streaming order. The columns are cut into groups of 64 (one cache line of int8 weights, four
// of float32); the pool's threads take contiguous runs of groups. Within a group, K is walked
// in blocks of 32 rows (the quantization block): for each block, each sub-panel of the group
// (NV vectors wide, so that M x NV partial sums stay in registers) loads its partial sums
// from y, runs the 32 rows, and stores them back. y's group stays in L1, and every cache line
// of W is read from memory once: the sub-panels of one block touch the same lines within a
// few hundred cycles. int8 weights are widened and scaled in registers (vpmovsxbd, vcvtdq2ps,
// one multiply by the block's scale), then used for all M rows.
// Tests: tests/test_gemv.py.
#include "cpu/gemv.h"

#include <algorithm>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/gemm.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

constexpr int64_t GROUP = 64;  // columns per unit of work
constexpr int64_t KB = kQ8Block;
constexpr int64_t ROWS = 8;  // rows of W per pass over a band (divides the quantization block)

// int8 -> float32 and float16 -> float32 loads of VL values. GCC does not vectorise these
// conversions from generic vector code, so the x86 builds use the instructions directly.
#if defined(__AVX512F__)
inline vf load_q(const int8_t* p) {
  return (vf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline vf load_h(const uint16_t* p) { return (vf)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
#elif defined(__AVX2__)
inline vf load_q(const int8_t* p) {
  return (vf)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline vf load_h(const uint16_t* p) { return (vf)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
#else
inline vf load_q(const int8_t* p) {
  vf v;
  for (int i = 0; i < VL; ++i) v[i] = static_cast<float>(p[i]);
  return v;
}
inline float half_to_float(uint16_t h);
inline vf load_h(const uint16_t* p) {
  vf v;
  for (int i = 0; i < VL; ++i) v[i] = half_to_float(p[i]);
  return v;
}
#endif
inline float half_to_float(uint16_t h) {
  _Float16 f;
  std::memcpy(&f, &h, 2);
  return static_cast<float>(f);
}

// y(rows [i0, i0 + MB), columns [n0, n0 + NV * VL)) += x W over rows [k0, k1) of W (at most
// one quantization block). The products are summed in registers; int8 rows are summed
// unscaled and the block's scale applied once at the end.
template <bool Q8, int MB, int NV>
inline void panel(const GemvArgs& g, int64_t i0, int64_t n0, int64_t k0, int64_t k1) {
  vf acc[MB][NV];
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  const float* x = g.x + i0 * g.ldx;
  for (int64_t k = k0; k < k1; ++k) {
    vf w[NV];
    if (Q8) {
      const int8_t* r = g.q + k * g.ldw + n0;
      for (int v = 0; v < NV; ++v) w[v] = load_q(r + v * VL);
    } else {
      const float* r = g.w + k * g.ldw + n0;
      for (int v = 0; v < NV; ++v) w[v] = loadu(r + v * VL);
    }
    for (int i = 0; i < MB; ++i) {
      const vf xb = splat(x[i * g.ldx + k]);
      for (int v = 0; v < NV; ++v) acc[i][v] += xb * w[v];
    }
  }
  vf sc[NV];
  if (Q8)
    for (int v = 0; v < NV; ++v) sc[v] = load_h(g.s + (k0 / KB) * g.ldw + n0 + v * VL);
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) {
      float* yp = g.y + (i0 + i) * g.ldy + n0 + v * VL;
      storeu(yp, Q8 ? loadu(yp) + acc[i][v] * sc[v] : loadu(yp) + acc[i][v]);
    }
}

// Columns [n0, n0 + n) with n < VL, one at a time.
template <bool Q8>
void columns_scalar(const GemvArgs& g, int64_t n0, int64_t n, int64_t k0, int64_t k1) {
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = n0; j < n0 + n; ++j) {
      float s = 0.f;
      const float* x = g.x + i * g.ldx;
      if (Q8) {
        for (int64_t k = k0; k < k1; ++k) s += x[k] * static_cast<float>(g.q[k * g.ldw + j]);
        s *= half_to_float(g.s[(k0 / KB) * g.ldw + j]);
      } else {
        for (int64_t k = k0; k < k1; ++k) s += x[k] * g.w[k * g.ldw + j];
      }
      g.y[i * g.ldy + j] += s;
    }
}

// Registers: MB x NV accumulators + NV weight vectors + one broadcast. AVX-512 has 32 vector
// registers, AVX2 and SSE 16.
#if defined(__AVX512F__)
constexpr int REGS = 32;
#else
constexpr int REGS = 16;
#endif
template <int MB>
constexpr int nv_for() {
  return (MB * 4 + 4 + 1 <= REGS) ? 4 : (MB * 2 + 2 + 1 <= REGS) ? 2 : 1;
}

// Columns [n0, n0 + n) for rows [k0, k1): sub-panels of NV vectors, then single vectors,
// then single columns.
template <bool Q8, int MB>
void band_rows(const GemvArgs& g, int64_t n0, int64_t n, int64_t k0, int64_t k1) {
  constexpr int NV = nv_for<MB>();
  int64_t j = 0;
  for (; j + NV * VL <= n; j += NV * VL) panel<Q8, MB, NV>(g, 0, n0 + j, k0, k1);
  for (; j + VL <= n; j += VL) panel<Q8, MB, 1>(g, 0, n0 + j, k0, k1);
  if (j < n) columns_scalar<Q8>(g, n0 + j, n - j, k0, k1);
}

// Columns [n0, n0 + n): y starts as the bias (or zero), then every ROWS rows of W are added
// across the whole band, so W is read as ROWS sequential streams.
template <bool Q8>
void run_band(const GemvArgs& g, int64_t n0, int64_t n) {
  for (int64_t i = 0; i < g.M; ++i) {
    float* yr = g.y + i * g.ldy + n0;
    if (g.bias)
      std::memcpy(yr, g.bias + n0, sizeof(float) * n);
    else
      std::memset(yr, 0, sizeof(float) * n);
  }
  for (int64_t k0 = 0; k0 < g.K; k0 += ROWS) {
    const int64_t k1 = std::min<int64_t>(k0 + ROWS, g.K);
    switch (g.M) {
      case 1: band_rows<Q8, 1>(g, n0, n, k0, k1); break;
      case 2: band_rows<Q8, 2>(g, n0, n, k0, k1); break;
      case 3: band_rows<Q8, 3>(g, n0, n, k0, k1); break;
      case 4: band_rows<Q8, 4>(g, n0, n, k0, k1); break;
      case 5: band_rows<Q8, 5>(g, n0, n, k0, k1); break;
      case 6: band_rows<Q8, 6>(g, n0, n, k0, k1); break;
      case 7: band_rows<Q8, 7>(g, n0, n, k0, k1); break;
      default: band_rows<Q8, 8>(g, n0, n, k0, k1); break;
    }
  }
}

template <bool Q8>
void gemv_any(const GemvArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  // y's band stays in L1 (16 KiB of it): wider bands for fewer rows.
  const int64_t band = std::max<int64_t>(GROUP, (4096 / g.M) / GROUP * GROUP);
  const int64_t groups = (g.N + GROUP - 1) / GROUP;
  parallel_for_static(groups, 1, [&](int64_t b, int64_t e) {
    const int64_t c0 = b * GROUP, c1 = std::min<int64_t>(e * GROUP, g.N);
    for (int64_t n0 = c0; n0 < c1; n0 += band) run_band<Q8>(g, n0, std::min<int64_t>(band, c1 - n0));
  });
}

struct AlignedFloats {
  float* p = nullptr;
  size_t n = 0;
  ~AlignedFloats() { std::free(p); }
  float* get(size_t want) {
    if (want > n) {
      std::free(p);
      const size_t bytes = ((want * sizeof(float) + 4095) / 4096) * 4096;
      p = static_cast<float*>(std::aligned_alloc(4096, bytes));
      if (!p) throw std::bad_alloc();
      n = bytes / sizeof(float);
    }
    return p;
  }
};
thread_local AlignedFloats tl_wide;

// int8 GEMM: for each 128-column chunk (the pool's unit) and each 256-row slice of K, the
// slice of W is widened to float32 in a per-thread buffer (128 KiB, L2-resident) and
// multiplied with the single-thread SGEMM, accumulating over the slices.
constexpr int64_t QN = 128, QK = 256;

void widen(const GemvArgs& g, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* out) {
  for (int64_t k = k0; k < k0 + kc; ++k) {
    const int8_t* r = g.q + k * g.ldw + n0;
    const uint16_t* s = g.s + (k / KB) * g.ldw + n0;
    float* o = out + (k - k0) * nc;
    int64_t j = 0;
    for (; j + VL <= nc; j += VL) storeu(o + j, load_q(r + j) * load_h(s + j));
    for (; j < nc; ++j) o[j] = static_cast<float>(r[j]) * half_to_float(s[j]);
  }
}

}  // namespace

void gemv_f32(const GemvArgs& g) { gemv_any<false>(g); }
void gemv_q8(const GemvArgs& g) { gemv_any<true>(g); }

void gemm_q8(const GemvArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.M <= kGemvMaxRows || g.K == 0) {
    gemv_q8(g);
    return;
  }
  const int64_t chunks = (g.N + QN - 1) / QN;
  parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    float* buf = tl_wide.get(static_cast<size_t>(QK * QN));
    for (int64_t t = b; t < e; ++t) {
      const int64_t n0 = t * QN, nc = std::min<int64_t>(QN, g.N - n0);
      for (int64_t k0 = 0; k0 < g.K; k0 += QK) {
        const int64_t kc = std::min<int64_t>(QK, g.K - k0);
        widen(g, k0, kc, n0, nc, buf);
        GemmArgs a;
        a.M = g.M;
        a.N = nc;
        a.K = kc;
        a.A = g.x + k0;
        a.rsa = g.ldx;
        a.csa = 1;
        a.B = buf;
        a.rsb = nc;
        a.csb = 1;
        a.C = g.y + n0;
        a.ldc = g.ldy;
        a.beta = k0 ? 1.f : 0.f;
        a.bias_n = (k0 == 0 && g.bias) ? g.bias + n0 : nullptr;
        sgemm_st(a);
      }
    }
  });
}

const GemvKernels& gemv_kernels() {
  static const GemvKernels k{&gemv_f32, &gemv_q8, &gemm_q8};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
