// gemv.cpp: streaming y = x W (+ bias) for M <= 8 rows, float32 or Q8_0 int8 W (gemv.h), and
// the int8 GEMM for more rows. Compiled once per ISA.
//
// Streaming order. The pool's threads take contiguous runs of 64-column groups; each thread
// walks its columns in bands (2048 / M columns) whose slice of y and of the partial sums stays
// in L1. For a band, W is applied 8 rows at a time across the whole band, so it is read as 8
// sequential streams, each cache line once; within those 8 rows, sub-panels NV vectors wide
// keep M x NV sums in registers. int8 weights are widened and scaled in registers
// (vpmovsxbd, vcvtdq2ps, one multiply by the block's scale), then used for all M rows.
// The summation order of every output is sgemm's (see run_band): the GEMV and the GEMM give
// the same bits, so a sequence's logits do not depend on the batch it is decoded in.
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
thread_local AlignedFloats tl_wide, tl_partial;

// P(rows [0, MB), columns [n0, n0 + NV * VL)) continued over rows [k0, k1) of W: the partial
// sums of the current block come from P (zero when `first`), get one FMA per row of W in row
// order, and go back to P. int8 rows are widened and multiplied by their scale first (one
// rounding, as gemm_q8's widened panels hold them).
template <bool Q8, int MB, int NV>
inline void panel(const GemvArgs& g, float* P, int64_t ldp, int64_t n0, int64_t k0, int64_t k1, bool first) {
  vf acc[MB][NV];
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = first ? vf{} : loadu(P + i * ldp + v * VL);
  vf sc[NV];
  if (Q8)
    for (int v = 0; v < NV; ++v) sc[v] = load_h(g.s + (k0 / KB) * g.ldw + n0 + v * VL);
  for (int64_t k = k0; k < k1; ++k) {
    vf w[NV];
    if (Q8) {
      const int8_t* r = g.q + k * g.ldw + n0;
      for (int v = 0; v < NV; ++v) w[v] = load_q(r + v * VL) * sc[v];
    } else {
      const float* r = g.w + k * g.ldw + n0;
      for (int v = 0; v < NV; ++v) w[v] = loadu(r + v * VL);
    }
    for (int i = 0; i < MB; ++i) {
      const vf xb = splat(g.x[i * g.ldx + k]);
      for (int v = 0; v < NV; ++v) acc[i][v] += w[v] * xb;
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) storeu(P + i * ldp + v * VL, acc[i][v]);
}

// a * b + c rounded as the vector code rounds it: one FMA where the ISA has it (GCC does not
// always contract the scalar expression), a multiply and an add where it does not.
inline float fmadd(float a, float b, float c) {
#if defined(__FMA__)
  return __builtin_fmaf(a, b, c);
#else
  return a * b + c;
#endif
}

// The same for single columns [n0, n0 + n), n < VL.
template <bool Q8>
void columns_scalar(const GemvArgs& g, float* P, int64_t ldp, int64_t n0, int64_t n, int64_t k0, int64_t k1,
                    bool first) {
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float s = first ? 0.f : P[i * ldp + j];
      const float* x = g.x + i * g.ldx;
      const int64_t c = n0 + j;
      if (Q8) {
        const float sc = half_to_float(g.s[(k0 / KB) * g.ldw + c]);
        for (int64_t k = k0; k < k1; ++k) s = fmadd(static_cast<float>(g.q[k * g.ldw + c]) * sc, x[k], s);
      } else {
        for (int64_t k = k0; k < k1; ++k) s = fmadd(g.w[k * g.ldw + c], x[k], s);
      }
      P[i * ldp + j] = s;
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

// Columns [n0, n0 + n) (P's column 0 is n0) for rows [k0, k1): sub-panels of NV vectors, then
// single vectors, then single columns.
template <bool Q8, int MB>
void band_rows(const GemvArgs& g, float* P, int64_t ldp, int64_t n0, int64_t n, int64_t k0, int64_t k1, bool first) {
  constexpr int NV = nv_for<MB>();
  int64_t j = 0;
  for (; j + NV * VL <= n; j += NV * VL) panel<Q8, MB, NV>(g, P + j, ldp, n0 + j, k0, k1, first);
  for (; j + VL <= n; j += VL) panel<Q8, MB, 1>(g, P + j, ldp, n0 + j, k0, k1, first);
  if (j < n) columns_scalar<Q8>(g, P + j, ldp, n0 + j, n - j, k0, k1, first);
}

// Columns [n0, n0 + n) of y. The summation order of each y(i, j) is the one sgemm (gemm.cpp)
// and gemm_q8 use, so a row's result does not depend on how many rows share the call: K in
// blocks of `block` rows (the last may be shorter), each block a chain of FMAs from 0 in row
// order, the blocks added to y in order, then the bias. Within a block, ROWS rows of W at a
// time are applied across the whole band (ROWS sequential streams through memory), the
// block's partial sums waiting in P (L1) in between.
template <bool Q8>
void run_band(const GemvArgs& g, int64_t n0, int64_t n, int64_t block, float* P) {
  const int64_t ldp = n;
  for (int64_t b0 = 0; b0 < g.K; b0 += block) {
    const int64_t b1 = std::min<int64_t>(b0 + block, g.K);
    for (int64_t k0 = b0; k0 < b1; k0 += ROWS) {
      const int64_t k1 = std::min<int64_t>(k0 + ROWS, b1);
      const bool first = k0 == b0;
      switch (g.M) {
        case 1: band_rows<Q8, 1>(g, P, ldp, n0, n, k0, k1, first); break;
        case 2: band_rows<Q8, 2>(g, P, ldp, n0, n, k0, k1, first); break;
        case 3: band_rows<Q8, 3>(g, P, ldp, n0, n, k0, k1, first); break;
        case 4: band_rows<Q8, 4>(g, P, ldp, n0, n, k0, k1, first); break;
        case 5: band_rows<Q8, 5>(g, P, ldp, n0, n, k0, k1, first); break;
        case 6: band_rows<Q8, 6>(g, P, ldp, n0, n, k0, k1, first); break;
        case 7: band_rows<Q8, 7>(g, P, ldp, n0, n, k0, k1, first); break;
        default: band_rows<Q8, 8>(g, P, ldp, n0, n, k0, k1, first); break;
      }
    }
    for (int64_t i = 0; i < g.M; ++i) {
      float* yr = g.y + i * g.ldy + n0;
      const float* pr = P + i * ldp;
      if (b0 == 0)
        std::memcpy(yr, pr, sizeof(float) * n);
      else
        for (int64_t j = 0; j < n; ++j) yr[j] = pr[j] + yr[j];
    }
  }
  if (g.bias)
    for (int64_t i = 0; i < g.M; ++i) {
      float* yr = g.y + i * g.ldy + n0;
      for (int64_t j = 0; j < n; ++j) yr[j] += g.bias[n0 + j];
    }
}

// Rows per block of K: sgemm's rule (equal blocks of at most 256) for float32; whole 256-row
// slices for int8 (gemm_q8 widens W slice by slice).
constexpr int64_t QK = 256;
inline int64_t f32_block(int64_t K) {
  const int64_t nb = (K + 255) / 256;
  return (K + nb - 1) / nb;
}

template <bool Q8>
void gemv_any(const GemvArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K == 0) {  // y = bias
    for (int64_t i = 0; i < g.M; ++i)
      for (int64_t j = 0; j < g.N; ++j) g.y[i * g.ldy + j] = g.bias ? g.bias[j] : 0.f;
    return;
  }
  const int64_t block = Q8 ? QK : f32_block(g.K);
  // y's band and its partial sums stay in L1 (8 KiB each): wider bands for fewer rows.
  const int64_t band = std::max<int64_t>(GROUP, (2048 / g.M) / GROUP * GROUP);
  const int64_t groups = (g.N + GROUP - 1) / GROUP;
  parallel_for_static(groups, 1, [&](int64_t b, int64_t e) {
    float* P = tl_partial.get(static_cast<size_t>(g.M * band));
    const int64_t c0 = b * GROUP, c1 = std::min<int64_t>(e * GROUP, g.N);
    for (int64_t n0 = c0; n0 < c1; n0 += band) run_band<Q8>(g, n0, std::min<int64_t>(band, c1 - n0), block, P);
  });
}

// int8 GEMM: for each 128-column chunk (the pool's unit) and each 256-row slice of K, the
// slice of W is widened to float32 in a per-thread buffer (128 KiB, L2-resident) and
// multiplied with the single-thread SGEMM, accumulating over the slices.
constexpr int64_t QN = 128;

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
        a.bias_n = (k0 + kc >= g.K && g.bias) ? g.bias + n0 : nullptr;  // after the last slice
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
