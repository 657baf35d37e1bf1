// gemv.cpp: streaming y = x W (+ bias) for a few rows of x, float32 (M <= 8) or Q8_0 int8 W
// (any M, 8 rows at a time), with W (K, N) row-major or in 64-column panels (float32, int8,
// and int8 against int8-quantized x: W8A8), gemv.h. Compiled once per ISA.
//
// Streaming order. The pool's threads take contiguous runs of 64-column groups; each thread
// walks its columns in bands (float32: 8192 / M columns, int8: 2048 / M) whose slice of the
// partial sums stays in L1/L2. For a band, W is applied 8 rows at a time across the whole band, so it is read as
// 8 sequential streams, each
// cache line once, with software prefetch 16 rows ahead; within those rows, sub-panels NV
// vectors wide keep M x NV sums in registers. int8 weights are widened in registers
// (vpmovsxbd, vcvtdq2ps) and used for all rows; the block's scale is applied once per block.
// Summation order: float32 sums as sgemm does (see run_band), so the GEMV and the GEMM give
// the same bits; int8 has one order for any M. Either way a row's result does not depend on
// how many rows share the call, so a sequence's logits do not depend on its batch.
// int8 weights packed in 64-column panels (gemm_q8_packed, pyaiml.llm's layout) are read as
// one sequential stream per thread: GPT-2-small-shaped decode products (49 per step, weights
// from memory, 2 threads) 6.3-6.6 -> 5.5-5.7 ms per step at 1 row, 20.9 -> 13.5 ms at 8 rows,
// against the (K, N) layout's bands, interleaved in one process. float32 panels the same way
// (gemv_f32_packed: Llama-110M decode products 9.85-9.92 vs 10.23-10.54 ms per step at 1 row).
// Tests: tests/test_gemv.py.
#include "cpu/gemv.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>
#include <utility>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/isa.h"
#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/scratch.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

constexpr int64_t GROUP = 64;  // columns per unit of work
constexpr int64_t KB = kQ8Block;
constexpr int64_t ROWS = 8;  // rows of W per pass over a band (divides the quantization block)
// Software prefetch distance in rows of W. Measured on the 49 decode products of a GPT-2-small
// step at 2 threads (Zen 4, AVX-512, load average 1.1-1.4), configurations interleaved in one
// process, medians of 7: float32 18.4 GB/s without prefetch, 26.4 at 8 and 16 rows, 25.5 at 24
// (NumPy/OpenBLAS GEMV 22.2); int8 11.2 -> 16.2 GB/s at 16 rows. prefetcht0 and prefetchnta
// were slower than prefetcht2.
constexpr int64_t PREFETCH_ROWS = 16;
constexpr int64_t BANDF = 8192;  // float32 band: BANDF / M columns (see gemv_any)

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

thread_local ScratchFloats<4096> tl_partial;

// x's M rows (row stride ldx, K values each) in chunks of kGemvMaxRows, each chunk k-major
// (xt[c * mb * K + k * rows + i], rows = the chunk's row count): the kernels then read every
// row's x(i, k) at a constant offset from one pointer (with a pointer per row, GCC spills
// them and reloads one before every FMA).
inline void interleave_rows(const float* x, int64_t ldx, int64_t M, int64_t K, int64_t mb, float* xt) {
  for (int64_t r0 = 0; r0 < M; r0 += kGemvMaxRows) {
    const int64_t rows = std::min<int64_t>(kGemvMaxRows, M - r0);
    float* xc = xt + (r0 / kGemvMaxRows) * mb * K;
    for (int64_t i = 0; i < rows; ++i) {
      const float* xr = x + (r0 + i) * ldx;
      for (int64_t k = 0; k < K; ++k) xc[k * rows + i] = xr[k];
    }
  }
}

// Partial sums P(rows [0, MB), columns [n0, n0 + NV * VL)) over rows [k0, k1) of W.
// float32: P continues (or starts, when `first`) one chain of FMAs in row order.
// int8: [k0, k1) is one quantization block; its products with the unscaled int8 weights are
// summed from 0 in row order, then P = sum * scale (first block) or fma(sum, scale, P).
template <bool Q8, int MB, int NV>
inline void panel(const GemvArgs& g, float* P, float* Pb, int64_t ldp, int64_t n0, int64_t k0, int64_t k1,
                  bool first) {
  // int8: rows [k0, k1) lie in one quantization block; its unscaled sums wait in Pb between
  // passes, and are scaled into P after the block's last row.
  const bool bstart = !Q8 || k0 % KB == 0, bend = !Q8 || k1 % KB == 0 || k1 == g.K;
  float* A = Q8 ? Pb : P;
  vf acc[MB][NV];
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = (Q8 ? bstart : first) ? vf{} : loadu(A + i * ldp + v * VL);
  for (int64_t k = k0; k < k1; ++k) {
    vf w[NV];
    {
      // The rows PREFETCH_ROWS ahead of this sub-panel, into L2 (prefetcht2): the hardware
      // prefetchers alone left a third of the memory bandwidth unused here. An address past
      // the end of W is only a hint, never a fault.
      constexpr int RB = NV * VL * (Q8 ? 1 : 4);
      const uintptr_t ahead = (Q8 ? reinterpret_cast<uintptr_t>(g.q + k * g.ldw + n0)
                                  : reinterpret_cast<uintptr_t>(g.w + k * g.ldw + n0)) +
                              static_cast<uintptr_t>(PREFETCH_ROWS * g.ldw * (Q8 ? 1 : 4));
      for (int b = 0; b < RB; b += 64) __builtin_prefetch(reinterpret_cast<const void*>(ahead + b), 0, 1);
    }
    if (Q8) {
      const int8_t* r = g.q + k * g.ldw + n0;
      for (int v = 0; v < NV; ++v) w[v] = load_q(r + v * VL);
    } else {
      const float* r = g.w + k * g.ldw + n0;
      for (int v = 0; v < NV; ++v) w[v] = loadu(r + v * VL);
    }
    for (int i = 0; i < MB; ++i) {
      // vector * scalar, as sgemm's micro-kernel writes it (a broadcast folded into the FMA;
      // splat() would add 0 first, one more instruction per row and x)
      // one row: x[k]; several: interleaved by gemv_any, x[k * MB + i] (constant offsets)
      const float xs = MB == 1 ? g.x[k] : g.x[k * MB + i];
      for (int v = 0; v < NV; ++v) acc[i][v] += w[v] * xs;
    }
  }
  if (Q8 && bend) {
    const bool first_block = k0 < KB;
    vf sc[NV];
    for (int v = 0; v < NV; ++v) sc[v] = load_h(g.s + (k0 / KB) * g.ldw + n0 + v * VL);
    for (int i = 0; i < MB; ++i)
      for (int v = 0; v < NV; ++v) {
        float* p = P + i * ldp + v * VL;
        storeu(p, first_block ? acc[i][v] * sc[v] : loadu(p) + acc[i][v] * sc[v]);
      }
    return;
  }
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) storeu(A + i * ldp + v * VL, acc[i][v]);
}

// float32 columns [n0, n0 + nt), nt < VL: panel<false, MB, 1> with masked loads and stores (a
// layer's last columns, e.g. a 10-class Dense head; each lane is the same chain of FMAs as a
// full vector's, so the bits are the same). The scalar loop it replaces was one dependent FMA
// chain per column: 18 us for a (1, 2304) x (2304, 10) product, 5 us at 16 columns.
template <int MB>
inline void panel_tail(const GemvArgs& g, float* P, int64_t ldp, int64_t n0, int nt, int64_t k0, int64_t k1,
                       bool first) {
  vf acc[MB];
  for (int i = 0; i < MB; ++i) acc[i] = first ? vf{} : loadu_n(P + i * ldp, nt);
  for (int64_t k = k0; k < k1; ++k) {
    const vf w = loadu_n(g.w + k * g.ldw + n0, nt);
    for (int i = 0; i < MB; ++i) {
      const float xs = MB == 1 ? g.x[k] : g.x[k * MB + i];
      acc[i] += w * xs;
    }
  }
  for (int i = 0; i < MB; ++i) storeu_n(P + i * ldp, acc[i], nt);
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

// The same for single int8 columns [n0, n0 + n), n < VL (float32 ones: panel_tail).
void columns_q8(const GemvArgs& g, float* P, float* Pb, int64_t ldp, int64_t n0, int64_t n, int64_t k0, int64_t k1) {
  const bool bstart = k0 % KB == 0, bend = k1 % KB == 0 || k1 == g.K;
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const float* x = g.x + i * g.ldx;  // x[k * g.xk]
      const int64_t c = n0 + j;
      float* p = P + i * ldp + j;
      float* pb = Pb + i * ldp + j;
      float s = bstart ? 0.f : *pb;
      for (int64_t k = k0; k < k1; ++k) s = fmadd(static_cast<float>(g.q[k * g.ldw + c]), x[k * g.xk], s);
      if (!bend) {
        *pb = s;
        continue;
      }
      const float sc = half_to_float(g.s[(k0 / KB) * g.ldw + c]);
      *p = k0 < KB ? s * sc : fmadd(s, sc, *p);
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
void band_rows(const GemvArgs& g, float* P, float* Pb, int64_t ldp, int64_t n0, int64_t n, int64_t k0, int64_t k1,
               bool first) {
  constexpr int NV = nv_for<MB>();
  int64_t j = 0;
  for (; j + NV * VL <= n; j += NV * VL) panel<Q8, MB, NV>(g, P + j, Pb + j, ldp, n0 + j, k0, k1, first);
  for (; j + VL <= n; j += VL) panel<Q8, MB, 1>(g, P + j, Pb + j, ldp, n0 + j, k0, k1, first);
  if (j < n) {
    if constexpr (Q8)
      columns_q8(g, P + j, Pb + j, ldp, n0 + j, n - j, k0, k1);
    else
      panel_tail<MB>(g, P + j, ldp, n0 + j, static_cast<int>(n - j), k0, k1, first);
  }
}

// Columns [n0, n0 + n) of y. float32: the summation order of each y(i, j) is sgemm's
// (gemm.cpp), so a row's result does not depend on how many rows share the call: K in blocks
// of `block` rows (the last may be shorter), each block a chain of FMAs from 0 in row order,
// the blocks added to y in order, then the bias. Within a block, ROWS rows of W at a time are
// applied across the whole band (ROWS sequential streams through memory), the block's partial
// sums waiting in P (L1) in between. int8: one block (all of K) of per-quantization-block
// passes (see panel), then the bias.
template <bool Q8>
void run_band(const GemvArgs& g, int64_t n0, int64_t n, int64_t block, float* P, float* Pb) {
  const int64_t ldp = n;
  for (int64_t b0 = 0; b0 < g.K; b0 += block) {
    const int64_t b1 = std::min<int64_t>(b0 + block, g.K);
    for (int64_t k0 = b0; k0 < b1; k0 += ROWS) {
      const int64_t k1 = std::min<int64_t>(k0 + ROWS, b1);
      const bool first = k0 == b0;
      switch (g.M) {
        case 1: band_rows<Q8, 1>(g, P, Pb, ldp, n0, n, k0, k1, first); break;
        case 2: band_rows<Q8, 2>(g, P, Pb, ldp, n0, n, k0, k1, first); break;
        case 3: band_rows<Q8, 3>(g, P, Pb, ldp, n0, n, k0, k1, first); break;
        case 4: band_rows<Q8, 4>(g, P, Pb, ldp, n0, n, k0, k1, first); break;
        case 5: band_rows<Q8, 5>(g, P, Pb, ldp, n0, n, k0, k1, first); break;
        case 6: band_rows<Q8, 6>(g, P, Pb, ldp, n0, n, k0, k1, first); break;
        case 7: band_rows<Q8, 7>(g, P, Pb, ldp, n0, n, k0, k1, first); break;
        default: band_rows<Q8, 8>(g, P, Pb, ldp, n0, n, k0, k1, first); break;
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

// Rows per block of K: sgemm's rule (equal blocks of at most 256) for float32. int8 sums all
// of K in one chain of per-block fma(sum, scale, P).
inline int64_t f32_block(int64_t K) {
  const int64_t nb = (K + 255) / 256;
  return (K + nb - 1) / nb;
}

// One row of x against fewer than VL columns (a classifier's head at batch 1: (1, 2304) x
// (2304, 10)) in run_band's order, but with the K blocks' chains interleaved. run_band walks
// the blocks one after another, each one chain of dependent FMAs, so the product ran at the
// FMA latency (~5.5 us for the example, 9 blocks of 256 rows); here up to kChains blocks
// advance together, each chain still from 0 in row order, then y = P0, y = P_b + y in block
// order, then the bias: the same bits (tests/test_gemv.py compares them with sgemm's). Up to
// 8 rows run one by one (gemv_any), each reading W from L2 again: 4 rows as one panel of 4
// chains per block took ~17 us, one by one ~8.
constexpr int kChains = 12;

// The chains of blocks b0 .. b0 + NC - 1 over their rows [k0, k1), continuing acc.
template <int NC>
inline void row_chains(const GemvArgs& g, int64_t block, int64_t b0, int64_t k0, int64_t k1, int nt, vf* acc) {
  // locals: with acc and g behind pointers GCC reloaded g's strides and stored acc on every
  // row, the store-to-load round trip lengthening each chain's step ~3x
  const int64_t ldw = g.ldw, xk = g.xk, ws = block * ldw, xs = block * xk;
  const float* w = g.w + b0 * ws;
  const float* x = g.x + b0 * xs;
  vf a[NC];
  for (int c = 0; c < NC; ++c) a[c] = acc[c];
  for (int64_t k = k0; k < k1; ++k)
    for (int c = 0; c < NC; ++c) a[c] += loadu_n(w + c * ws + k * ldw, nt) * x[c * xs + k * xk];
  for (int c = 0; c < NC; ++c) acc[c] = a[c];
}

template <int... I>
constexpr auto chain_table(std::integer_sequence<int, I...>) {
  using Fn = void (*)(const GemvArgs&, int64_t, int64_t, int64_t, int64_t, int, vf*);
  return std::array<Fn, sizeof...(I)>{&row_chains<I + 1>...};
}

void gemv_row_narrow(const GemvArgs& g, int64_t block) {
  static constexpr auto tab = chain_table(std::make_integer_sequence<int, kChains>{});
  const int nt = static_cast<int>(g.N);
  const int64_t nb = (g.K + block - 1) / block, last_len = g.K - (nb - 1) * block;
  vf y{};
  for (int64_t b0 = 0; b0 < nb; b0 += kChains) {
    const int nc = static_cast<int>(std::min<int64_t>(kChains, nb - b0));
    vf acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = vf{};
    if (b0 + nc < nb || last_len == block) {
      tab[nc - 1](g, block, b0, 0, block, nt, acc);
    } else {  // the group holds the last, shorter block: all chains over its rows, then the rest
      tab[nc - 1](g, block, b0, 0, last_len, nt, acc);
      if (nc > 1) tab[nc - 2](g, block, b0, last_len, block, nt, acc);
    }
    for (int c = 0; c < nc; ++c) y = (b0 + c == 0) ? acc[c] : acc[c] + y;
  }
  if (g.bias) y = y + loadu_n(g.bias, nt);
  storeu_n(g.y, y, nt);
}

template <bool Q8>
void gemv_any(const GemvArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K == 0) {  // y = bias
    for (int64_t i = 0; i < g.M; ++i)
      for (int64_t j = 0; j < g.N; ++j) g.y[i * g.ldy + j] = g.bias ? g.bias[j] : 0.f;
    return;
  }
  const int64_t block = Q8 ? g.K : f32_block(g.K);
  if (!Q8 && g.N < VL && g.M <= kGemvMaxRows) {  // each row on its own (rows are independent)
    for (int64_t i = 0; i < g.M; ++i) {
      GemvArgs r = g;
      r.M = 1;
      r.x = g.x + i * g.ldx;
      r.y = g.y + i * g.ldy;
      gemv_row_narrow(r, block);
    }
    return;
  }
  const int64_t mb = std::min<int64_t>(g.M, kGemvMaxRows);
  // Bands: wider for fewer rows, the partial sums (M x band floats) 32 KiB for float32: each
  // row of W is then read in runs of band * 4 bytes (32 KiB at M = 1, 4 KiB at M = 8), which
  // the prefetchers stream better than 2048 / M columns did: GPT-2 small decode, 2 threads,
  // alternating builds, best of 3: batch 8 38.6 / 38.4 ms per step at 2048 against 32.2 /
  // 27.9 / 29.2 ms at 8192 (batch 1 21.0 / 18.9 against 18.0 / 17.9 / 18.5 ms); 16384 was
  // no clearer gain (26.1 ms, batch 1 17.2; Llama batch 1 14.0 against 13.3). int8 keeps
  // 2048 / M (8192 was no clear gain there). More than 8 rows (int8 only) run 8 at a time
  // over each band, whose weights stay in L2 (a band of 256 columns of a 3072-row int8
  // weight is 768 KiB), so W is read from memory once.
  const int64_t band = std::max<int64_t>(GROUP, ((Q8 ? 2048 : BANDF) / mb) / GROUP * GROUP);
  const int64_t groups = (g.N + GROUP - 1) / GROUP;
  const int64_t chunks = (g.M + kGemvMaxRows - 1) / kGemvMaxRows;
  parallel_for_static(groups, 1, [&](int64_t b, int64_t e) {
    float* P = tl_partial.get(static_cast<size_t>(2 * mb * band + (mb > 1 ? chunks * mb * g.K : 0)));
    float* Pb = P + mb * band;
    // several rows: x interleaved per chunk of 8 (interleave_rows)
    float* xt = Pb + mb * band;
    if (mb > 1) interleave_rows(g.x, g.ldx, g.M, g.K, mb, xt);
    const int64_t c0 = b * GROUP, c1 = std::min<int64_t>(e * GROUP, g.N);
    for (int64_t n0 = c0; n0 < c1; n0 += band)
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t r0 = c * kGemvMaxRows;
        GemvArgs s = g;
        s.M = std::min<int64_t>(kGemvMaxRows, g.M - r0);
        if (mb > 1) {
          s.x = xt + c * mb * g.K;
          s.ldx = 1;
          s.xk = s.M;
        } else {
          s.x = g.x + r0 * g.ldx;
        }
        s.y = g.y + r0 * g.ldy;
        run_band<Q8>(s, n0, std::min<int64_t>(band, c1 - n0), block, P, Pb);
      }
  });
}

// a * b + c in one rounding where the ISA has FMA (written out: GCC contracts the plain
// expression in some template instances and not in others, which would make a row's bits
// depend on how many rows share the call)
inline vf vfmadd(vf a, vf b, vf c) {
#if defined(__AVX512F__)
  return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
  return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

// ---------------------------------------------------------------- packed int8 (Q8_0 panels)
// W in panels of kQ8Panel columns (gemv.h): a panel's rows are consecutive cache lines, so a
// thread's share of W (whole panels) is one sequential stream. For each 32-row block of a
// panel, sub-panels of NV vectors take the block's rows (2 KiB, in L1 after the first
// sub-panel) into MB x NV register sums, which are then scaled into T (the panel's totals).
// Summation order per column: each block summed from 0 in row order, then
// T = sum * scale (first block) or T + sum * scale, in block order: the same for any M.
template <bool A8, int MB, int NV>
inline void qp_block(const int8_t* r, const uint16_t* sc, const float* x, const float* xs, float* T, bool first) {
  vf acc[MB][NV];
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  for (int k = 0; k < KB; ++k, r += kQ8Panel) {
    vf w[NV];
    for (int v = 0; v < NV; ++v) w[v] = load_q(r + v * VL);
    for (int i = 0; i < MB; ++i) {
      const float xv = x[k * MB + i];  // x interleaved k-major (x[k] for one row)
      for (int v = 0; v < NV; ++v) acc[i][v] += w[v] * xv;
    }
  }
  vf s[NV];
  for (int v = 0; v < NV; ++v) s[v] = load_h(sc + v * VL);
  for (int i = 0; i < MB; ++i) {
    // W8A8 (quantized x): each row's block scale too, s * xs rounded once (as the VNNI path)
    vf sr[NV];
    for (int v = 0; v < NV; ++v) sr[v] = A8 ? s[v] * splat(xs[i]) : s[v];
    for (int v = 0; v < NV; ++v) {
      float* t = T + i * kQ8Panel + v * VL;
      storeu(t, first ? acc[i][v] * sr[v] : vfmadd(acc[i][v], sr[v], loadu(t)));
    }
  }
}

// One panel (qp: its K x kQ8Panel int8, sp: its K/32 x kQ8Panel scales) for MB rows of x
// (interleaved), totals into T (MB x kQ8Panel). A8: x holds quantized values, xs their block
// scales (xs[b * MB + i]).
template <bool A8, int MB>
void qp_panel(const int8_t* qp, const uint16_t* sp, int64_t K, const float* x, const float* xs, float* T) {
  constexpr int NV = std::min(nv_for<MB>(), static_cast<int>(kQ8Panel / VL));
  static_assert(kQ8Panel % (NV * VL) == 0, "sub-panels tile the panel");
  for (int64_t b = 0; b < K / KB; ++b) {
    const int8_t* r = qp + b * KB * kQ8Panel;
    // the block 8 blocks ahead (16 KiB), into L2: the hardware prefetchers alone fall behind
    __builtin_prefetch(r + 8 * KB * kQ8Panel, 0, 1);
    for (int64_t o = 64; o < KB * kQ8Panel; o += 64) __builtin_prefetch(r + 8 * KB * kQ8Panel + o, 0, 1);
    for (int64_t c = 0; c < kQ8Panel; c += NV * VL)
      qp_block<A8, MB, NV>(r + c, sp + b * kQ8Panel + c, x + b * KB * MB, A8 ? xs + b * MB : nullptr, T + c, b == 0);
  }
}

// f(std::integral_constant<int, rows>) for rows in [1, N] (the kernels' row count as a
// template argument).
template <int N, class F>
inline void with_rows(int64_t rows, F&& f) {
  if constexpr (N > 1) {
    if (rows >= N) return f(std::integral_constant<int, N>{});
    return with_rows<N - 1>(rows, f);
  } else {
    return f(std::integral_constant<int, 1>{});
  }
}

// A thread's scratch for the panel kernels: *T (kGemvMaxRows x 64 totals), then, for several
// rows, x interleaved per chunk of 8 (interleave_rows); chunk(c, r0) is what the kernels read.
struct ChunkedX {
  const float* x;
  int64_t ldx, K, mb;
  const float* xt;
  ChunkedX(const float* x_, int64_t ldx_, int64_t M, int64_t K_, float** T)
      : x(x_), ldx(ldx_), K(K_), mb(std::min<int64_t>(M, kGemvMaxRows)) {
    const int64_t chunks = (M + kGemvMaxRows - 1) / kGemvMaxRows;
    *T = tl_partial.get(static_cast<size_t>(kGemvMaxRows * kQ8Panel + (mb > 1 ? chunks * mb * K : 0)));
    float* t = *T + kGemvMaxRows * kQ8Panel;
    if (mb > 1) interleave_rows(x, ldx, M, K, mb, t);
    xt = t;
  }
  const float* chunk(int64_t c, int64_t r0) const { return mb > 1 ? xt + c * mb * K : x + r0 * ldx; }
};

// The panel kernels' common driver, for the panels [p0, p1) of one thread: rows of x in chunks
// of `per`; run(p, c, r0, rows) leaves chunk c's totals for panel p in T (rows x 64, row
// stride 64), which go to y's columns [64p, 64p + 64) with the bias.
template <class F>
void panel_rows(int64_t M, int64_t N, int64_t per, const float* bias, float* y, int64_t ldy, int64_t p0, int64_t p1,
                float* T, F&& run) {
  const int64_t chunks = (M + per - 1) / per;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kQ8Panel, n = std::min<int64_t>(kQ8Panel, N - n0);
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t r0 = c * per, rows = std::min<int64_t>(per, M - r0);
      run(p, c, r0, rows);
      for (int64_t i = 0; i < rows; ++i) {
        float* yr = y + (r0 + i) * ldy + n0;
        const float* t = T + i * kQ8Panel;
        if (bias)
          for (int64_t j = 0; j < n; ++j) yr[j] = t[j] + bias[n0 + j];
        else
          std::memcpy(yr, t, sizeof(float) * n);
      }
    }
  }
}

void gemm_q8_packed_impl(const GemvPackedArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  const int64_t panels = (g.N + kQ8Panel - 1) / kQ8Panel;
  parallel_for_static(panels, 1, [&](int64_t p0, int64_t p1) {
    float* T;
    const ChunkedX cx(g.x, g.ldx, g.M, g.K, &T);
    panel_rows(g.M, g.N, kGemvMaxRows, g.bias, g.y, g.ldy, p0, p1, T, [&](int64_t p, int64_t c, int64_t r0, int64_t rows) {
      const float* x = cx.chunk(c, r0);
      with_rows<kGemvMaxRows>(rows, [&](auto MB) {
        qp_panel<false, MB>(g.q + p * g.K * kQ8Panel, g.s + p * (g.K / KB) * kQ8Panel, g.K, x, nullptr, T);
      });
    });
  });
}

// ---------------------------------------------------------------- W8A8: int8 activations too
// linear_w8a8_packed (gemv.h): each row of x quantized per 32-row block like the weights
// (xs = amax / 127, xq = rint(x * (127 / amax)) in [-127, 127]), each block's products summed
// exactly (integers: 32 x 127 x 127 < 2^24, so exact in float32 as well as in int32), then
// T = isum * s (first block) or fma(isum, s, T), s = scale(b, n) * xs(i, b), in block order.
// With AVX-512 VNNI the block sums are vpdpbusd on the weights transposed in registers (four
// rows at a time, 64 columns: the weights biased to unsigned by +128, corrected by 128 x the
// block's sum of xq); elsewhere the float32 kernel above runs on the quantized x. Both give
// the same bits.

// x's rows quantized: xs (M x K/32 block scales) and either xq and xsum (M x K int8,
// row-major, and the block sums of xq: the VNNI path) or xqf (the same values as float32: the
// float path); the outputs a path does not read are null. A block holding NaN or inf gets xq 0
// and xs NaN, so its row's products are NaN, as a float product would be.
void quantize_rows(const float* x, int64_t ldx, int64_t M, int64_t K, int8_t* xq, float* xqf, float* xs,
                   int32_t* xsum) {
  const int64_t nb = K / KB;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = x + i * ldx + b * KB;
      float amax = 0.f;
      bool finite = true;
      for (int64_t k = 0; k < KB; ++k) {
        amax = std::max(amax, std::fabs(xb[k]));
        finite = finite && std::isfinite(xb[k]);
      }
      if (!finite) {  // NaN or inf in the block: the products come out NaN (xs), never a number
        if (xq) {
          std::memset(xq + i * K + b * KB, 0, KB);
          xsum[i * nb + b] = 0;
        } else {
          std::fill(xqf + i * K + b * KB, xqf + i * K + (b + 1) * KB, 0.f);
        }
        xs[i * nb + b] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      int32_t sum = 0;
      for (int64_t k = 0; k < KB; ++k) {
        const float v = std::min(127.f, std::max(-127.f, __builtin_rintf(xb[k] * inv)));
        if (xq) {
          xq[i * K + b * KB + k] = static_cast<int8_t>(v);
          sum += static_cast<int32_t>(v);
        } else {
          xqf[i * K + b * KB + k] = v;
        }
      }
      xs[i * nb + b] = amax / 127.f;
      if (xq) xsum[i * nb + b] = sum;
    }
}

#if defined(__AVX512F__)
// The 4 x 4 transpose of 128-bit lanes: lane L of out[i] = lane i of in[L]. Its own inverse.
__attribute__((always_inline)) inline void lanes4x4(__m512i& a, __m512i& b, __m512i& c, __m512i& d) {
  const __m512i t0 = _mm512_shuffle_i32x4(a, b, 0x44), t1 = _mm512_shuffle_i32x4(a, b, 0xEE);
  const __m512i t2 = _mm512_shuffle_i32x4(c, d, 0x44), t3 = _mm512_shuffle_i32x4(c, d, 0xEE);
  a = _mm512_shuffle_i32x4(t0, t2, 0x88);
  b = _mm512_shuffle_i32x4(t0, t2, 0xDD);
  c = _mm512_shuffle_i32x4(t1, t3, 0x88);
  d = _mm512_shuffle_i32x4(t1, t3, 0xDD);
}

// One panel for MB (<= 4) rows of x: the block sums by vpdpbusd. Four rows of the panel (4 x 64
// int8) become four vectors of 16 columns x 4 rows each (bytes interleaved, then 16-bit pairs),
// whose lane L holds columns 16L + 4v .. 16L + 4v + 3 in vector v: the sums and T are kept in
// that order and put back in column order at the end; the block's scales are put in it.
template <int MB>
__attribute__((target("avx512vnni"))) void vnni_panel(const int8_t* qp, const uint16_t* sp, int64_t K,
                                                     const int8_t* xq, int64_t ldq, const float* xs,
                                                     const int32_t* xsum, int64_t nb, float* T) {
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* r = qp + b * KB * kQ8Panel;
    __builtin_prefetch(r + 8 * KB * kQ8Panel, 0, 1);
    for (int64_t o = 64; o < KB * kQ8Panel; o += 64) __builtin_prefetch(r + 8 * KB * kQ8Panel + o, 0, 1);
    __m512i acc[MB][4];
    for (int i = 0; i < MB; ++i)
      for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_si512();
    for (int g = 0; g < KB / 4; ++g) {
      const int8_t* rg = r + g * 4 * kQ8Panel;
      const __m512i r0 = _mm512_loadu_si512(rg), r1 = _mm512_loadu_si512(rg + kQ8Panel);
      const __m512i r2 = _mm512_loadu_si512(rg + 2 * kQ8Panel), r3 = _mm512_loadu_si512(rg + 3 * kQ8Panel);
      const __m512i t0 = _mm512_unpacklo_epi8(r0, r1), t1 = _mm512_unpackhi_epi8(r0, r1);
      const __m512i t2 = _mm512_unpacklo_epi8(r2, r3), t3 = _mm512_unpackhi_epi8(r2, r3);
      __m512i u[4];
      u[0] = _mm512_xor_si512(_mm512_unpacklo_epi16(t0, t2), bias);
      u[1] = _mm512_xor_si512(_mm512_unpackhi_epi16(t0, t2), bias);
      u[2] = _mm512_xor_si512(_mm512_unpacklo_epi16(t1, t3), bias);
      u[3] = _mm512_xor_si512(_mm512_unpackhi_epi16(t1, t3), bias);
      for (int i = 0; i < MB; ++i) {
        int32_t x4;
        std::memcpy(&x4, xq + i * ldq + b * KB + g * 4, 4);
        const __m512i xv = _mm512_set1_epi32(x4);
        for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], u[v], xv);
      }
    }
    __m512i s[4];
    for (int v = 0; v < 4; ++v)
      s[v] = _mm512_castps_si512(
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sp + b * kQ8Panel + v * 16))));
    lanes4x4(s[0], s[1], s[2], s[3]);
    for (int i = 0; i < MB; ++i) {
      const __m512i corr = _mm512_set1_epi32(128 * xsum[i * nb + b]);
      const __m512 xsv = _mm512_set1_ps(xs[i * nb + b]);
      for (int v = 0; v < 4; ++v) {
        const __m512 f = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][v], corr));
        const __m512 sv = _mm512_mul_ps(_mm512_castsi512_ps(s[v]), xsv);
        float* t = T + i * kQ8Panel + v * 16;
        _mm512_storeu_ps(t, b == 0 ? _mm512_mul_ps(f, sv) : _mm512_fmadd_ps(f, sv, _mm512_loadu_ps(t)));
      }
    }
  }
  for (int i = 0; i < MB; ++i) {
    float* t = T + i * kQ8Panel;
    __m512i v0 = _mm512_loadu_si512(t), v1 = _mm512_loadu_si512(t + 16), v2 = _mm512_loadu_si512(t + 32),
            v3 = _mm512_loadu_si512(t + 48);
    lanes4x4(v0, v1, v2, v3);
    _mm512_storeu_si512(t, v0);
    _mm512_storeu_si512(t + 16, v1);
    _mm512_storeu_si512(t + 32, v2);
    _mm512_storeu_si512(t + 48, v3);
  }
}
#endif

thread_local std::vector<int8_t> tl_xq;
thread_local std::vector<int32_t> tl_xsum;
thread_local ScratchFloats<64> tl_xqf, tl_xs;

void gemm_w8a8_packed_impl(const GemvPackedArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  const int64_t panels = (g.N + kQ8Panel - 1) / kQ8Panel, nb = g.K / KB;
#if defined(__AVX512F__)
  static const bool vnni = cpu_has_avx512_vnni();
#else
  constexpr bool vnni = false;
#endif
  // x quantized once, by the calling thread (its buffers are read by the pool's threads), into
  // what this CPU's path reads
  int8_t* xq = nullptr;
  int32_t* xsum = nullptr;
  float* xqf = nullptr;
  if (vnni) {
    if (static_cast<int64_t>(tl_xq.size()) < g.M * g.K) tl_xq.resize(static_cast<size_t>(g.M * g.K));
    if (static_cast<int64_t>(tl_xsum.size()) < g.M * nb) tl_xsum.resize(static_cast<size_t>(g.M * nb));
    xq = tl_xq.data();
    xsum = tl_xsum.data();
  } else {
    xqf = tl_xqf.get(static_cast<size_t>(g.M * g.K));
  }
  float* xs = tl_xs.get(static_cast<size_t>(g.M * nb));
  quantize_rows(g.x, g.ldx, g.M, g.K, xq, xqf, xs, xsum);
  const int64_t per = vnni ? 4 : kGemvMaxRows;
  const int64_t mb = std::min<int64_t>(g.M, per);
  const int64_t chunks = (g.M + per - 1) / per;
  parallel_for_static(panels, 1, [&](int64_t p0, int64_t p1) {
    const size_t inter = vnni ? 0 : static_cast<size_t>(chunks * mb * (g.K + nb));
    float* T = tl_partial.get(static_cast<size_t>(kGemvMaxRows * kQ8Panel) + inter);
    // the float path: quantized x and its block scales interleaved per chunk (interleave_rows)
    float* xt = T + kGemvMaxRows * kQ8Panel;
    float* st = xt + chunks * mb * g.K;
    if (!vnni) {
      interleave_rows(xqf, g.K, g.M, g.K, mb, xt);
      interleave_rows(xs, nb, g.M, nb, mb, st);
    }
    panel_rows(g.M, g.N, per, g.bias, g.y, g.ldy, p0, p1, T, [&](int64_t p, int64_t c, int64_t r0, int64_t rows) {
      const int8_t* qp = g.q + p * g.K * kQ8Panel;
      const uint16_t* sp = g.s + p * nb * kQ8Panel;
#if defined(__AVX512F__)
      if (vnni) {
        with_rows<4>(rows, [&](auto MB) {
          vnni_panel<MB>(qp, sp, g.K, xq + r0 * g.K, g.K, xs + r0 * nb, xsum + r0 * nb, nb, T);
        });
        return;
      }
#endif
      const float* x = mb > 1 ? xt + c * mb * g.K : xqf + r0 * g.K;
      const float* sx = mb > 1 ? st + c * mb * nb : xs + r0 * nb;
      with_rows<kGemvMaxRows>(rows, [&](auto MB) { qp_panel<true, MB>(qp, sp, g.K, x, sx, T); });
    });
  });
}

// ---------------------------------------------------------------- packed float32 (64-column panels)
// W in panels of kPanel columns (gemv.h, GemvF32PackedArgs): a thread's whole panels are one
// sequential stream, as for int8. Per panel, K in sgemm's blocks (f32_block); for each block,
// sub-panels of NV vectors take the block's rows (at most 256 x 256 bytes, from L1/L2 after
// the first sub-panel) into MB x NV register sums, each a chain of FMAs from 0 in row order;
// the blocks are added into T (the panel's totals) in block order, then the bias: run_band's
// order, so the bits equal the (K, N) GEMV's and sgemm's.
// Prefetch distance in panel rows for up to 3 rows of x (16 KiB ahead), for panels that take
// several passes (AVX2 from 2 rows of x, AVX-512 from 7): the later passes read the rows out
// of order, which the hardware prefetchers do not follow. A panel read in one pass (AVX2 one
// row of x, AVX-512 up to six) is one sequential stream, and prefetcht2 ahead of it slowed it:
// Llama-110M's 49 decode products at one row, in-process A/B over 24-30 alternating rounds,
// fast phases of this VM: 45.6 -> 57.1 and 43.4 -> 53.2 GB/s (AVX2), 45.2 -> 52.0 and 43.1 ->
// 49.1 (AVX-512), slow phases 33.5 -> 34.1 (a plain read of the same arrays 35.0); AVX-512 at
// 3, 4 and 6 rows 1.05x-1.07x. Three rows on AVX2 lost 28% without it, eight rows 14-58%.
// Earlier, with every panel prefetched (medians of 9, interleaved with the (K, N) GEMV):
// 32 rows 1 row 9.85 vs 10.54 ms, 8 rows 12.38 vs 12.40; 64 rows 9.92 vs 10.23, 11.74 vs 12.14;
// 128 rows 10.22 vs 10.54, 11.24 vs 12.12; without the even spread over the sub-panel passes
// (prefetching only in the first) 8 rows took 13.15 vs 12.24 ms.
constexpr int64_t FP_PREFETCH = 64;
// From 4 rows of x on, 128 rows (32 KiB): GPT-2-small's decode products at 8 rows, same
// harness, new / old time per step in six runs at 128 rows 0.69, 0.69, 0.69, 0.91, 0.96, 0.96;
// at 64 rows 0.86, 1.08; at 192 rows 0.98 (Llama 0.97 at 64, 128 and 192). The runs at 0.69
// (12.2-13.0 ms, 38-40 GB/s, as fast as one row) came and went with the VM; the others
// read 16-19 ms on both sides.
constexpr int64_t FP_PREFETCH_WIDE = 128;

// Rows [0, rows) of one sub-panel (NV vectors) for MB rows of x. The sums start from 0 (start)
// or from P, and end in P (more rows of the block follow) or in T (the block's last rows: T =
// sums on the first block, sums + T after). A float stored and reloaded is the same float, so
// cutting a block into runs of rows keeps each column's chain of FMAs as it is.
template <int MB, int NV>
inline void fp_block(const float* r, int64_t rows, const float* x, float* P, float* T, bool start, bool end,
                     bool first, const char* pf) {
  // pf: this pass's share of the prefetches, 256 / passes bytes per row (see fp_panel); none
  // when the panel goes in one pass
  constexpr int PASSES = kPanel / (NV * VL);
  constexpr int STEP = kPanel * 4 / PASSES;
  vf acc[MB][NV];
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = start ? vf{} : loadu(P + i * kPanel + v * VL);
  for (int64_t k = 0; k < rows; ++k, r += kPanel, pf += STEP) {
    if constexpr (PASSES > 1)
      for (int b = 0; b < STEP; b += 64) __builtin_prefetch(pf + b, 0, 1);
    vf w[NV];
    for (int v = 0; v < NV; ++v) w[v] = loadu(r + v * VL);
    for (int i = 0; i < MB; ++i) {
      const float xs = MB == 1 ? x[k] : x[k * MB + i];
      for (int v = 0; v < NV; ++v) acc[i][v] += w[v] * xs;
    }
  }
  for (int i = 0; i < MB; ++i)
    for (int v = 0; v < NV; ++v) {
      if (!end) {
        storeu(P + i * kPanel + v * VL, acc[i][v]);
        continue;
      }
      float* t = T + i * kPanel + v * VL;
      storeu(t, first ? acc[i][v] : acc[i][v] + loadu(t));
    }
}

// The block's sub-panels one after another; the panel's bytes ahead are prefetched evenly over
// all of them (each pass a part of each row's share), so memory stays busy also while the
// later passes read the rows again. With several passes the block goes in runs of FP_RUN rows
// (8 KiB), every pass over a run before the next run, so the later passes find the run in L1:
// a whole block (64 KiB) is twice L1, and the passes read it again from L2 (AVX2, 8 rows of x:
// 8 passes of 8 columns).
constexpr int64_t FP_RUN = 32;
template <int MB>
void fp_panel(const float* wp, int64_t K, int64_t block, const float* x, float* T) {
  // One row: each weight vector is used once, so its load folds into the FMA and only the sums
  // take registers: the whole panel in one pass where they fit (AVX-512 4 vectors, AVX2 8).
  constexpr int FULL = static_cast<int>(kPanel / VL);
  constexpr int NV = MB == 1 ? (FULL <= REGS / 2 ? FULL : REGS / 2) : std::min(nv_for<MB>(), FULL);
  constexpr int PASSES = kPanel / (NV * VL);
  static_assert(kPanel % (NV * VL) == 0, "sub-panels tile the panel");
  alignas(64) float P[kGemvMaxRows * kPanel];
  for (int64_t b0 = 0; b0 < K; b0 += block) {
    const int64_t rows = std::min<int64_t>(block, K - b0);
    const int64_t run = PASSES == 1 ? rows : FP_RUN;
    const float* r = wp + b0 * kPanel;
    const char* pf = reinterpret_cast<const char*>(r) + (MB >= 4 ? FP_PREFETCH_WIDE : FP_PREFETCH) * kPanel * 4;
    for (int64_t k0 = 0; k0 < rows; k0 += run) {
      const int64_t n = std::min<int64_t>(run, rows - k0);
      for (int c = 0; c < PASSES; ++c)
        fp_block<MB, NV>(r + k0 * kPanel + c * NV * VL, n, x + (b0 + k0) * MB, P + c * NV * VL, T + c * NV * VL,
                         k0 == 0, k0 + n == rows, b0 == 0, pf + k0 * kPanel * 4 + c * n * (kPanel * 4 / PASSES));
    }
  }
}

void gemv_f32_packed_impl(const GemvF32PackedArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  const int64_t panels = (g.N + kPanel - 1) / kPanel;
  if (g.K == 0) {
    for (int64_t i = 0; i < g.M; ++i)
      for (int64_t j = 0; j < g.N; ++j) g.y[i * g.ldy + j] = g.bias ? g.bias[j] : 0.f;
    return;
  }
  const int64_t block = f32_block(g.K);
  parallel_for_static(panels, 1, [&](int64_t p0, int64_t p1) {
    float* T;
    const ChunkedX cx(g.x, g.ldx, g.M, g.K, &T);
    panel_rows(g.M, g.N, kGemvMaxRows, g.bias, g.y, g.ldy, p0, p1, T, [&](int64_t p, int64_t c, int64_t r0, int64_t rows) {
      const float* x = cx.chunk(c, r0);
      with_rows<kGemvMaxRows>(rows, [&](auto MB) { fp_panel<MB>(g.w + p * g.K * kPanel, g.K, block, x, T); });
    });
  });
}

}  // namespace

void gemv_f32(const GemvArgs& g) { gemv_any<false>(g); }
void gemv_q8(const GemvArgs& g) { gemv_any<true>(g); }
void gemm_q8(const GemvArgs& g) { gemv_any<true>(g); }
void gemm_q8_packed(const GemvPackedArgs& g) { gemm_q8_packed_impl(g); }
void gemv_f32_packed(const GemvF32PackedArgs& g) { gemv_f32_packed_impl(g); }
void gemm_w8a8_packed(const GemvPackedArgs& g) { gemm_w8a8_packed_impl(g); }

const GemvKernels& gemv_kernels() {
  static const GemvKernels k{&gemv_f32, &gemv_q8, &gemm_q8, &gemm_q8_packed, &gemv_f32_packed, &gemm_w8a8_packed};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
