// conv_tiles.h: the register tiles of the direct conv kernels, per ISA, shared by
// conv_direct.cpp and conv_winograd.cpp (whose tile products run on sc_fwd_tile and
// sc_gw_pass, tiles taken as pixels and channels as taps). Each tile keeps its sums in
// vector registers over the whole reduction; the kSc* tables index a tile by its row count,
// so a partial tile is one indirect call with no edge code.
//   sc_fwd_tile: y[i, 0:nc]      = bias + sum_k x(i, off[k]) w[k, 0:nc]     M pixels x V vectors
//   sc_gx_tile : out[kk, 0:V*VL] = sum_o wk[o, kk] gyT[o, 0:V*VL]           KB taps x V vectors
//   sc_gw_pass : out[kk, 0:V*VL] = sum_p x(p, off[kk]) gy[p, 0:V*VL] (+ grad_b row)
//
// Not here: the drivers that tile a conv over these (conv_direct.cpp, conv_winograd.cpp).
// Include only from csrc/cpu/ files (they are compiled with PYAIML_ISA_NS defined).
// Tests: tests/test_conv_direct.py, tests/test_conv_algorithms.py.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

#include <immintrin.h>

#include "common/simd.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

// Internal to the conv family: hidden, so not exported from the module, and calls between
// its files are direct (no PLT), as they were within one file.
#pragma GCC visibility push(hidden)

#if defined(__AVX512F__)
constexpr int kDM = 12, kDK = 12;  // 24 zmm accumulators
#else
constexpr int kDM = 6, kDK = 6;  // 12 ymm/xmm accumulators
#endif

// Broadcast of a float from memory: one vbroadcastss. (simd.h's splat, vf{} + x, keeps an
// extra scalar add of +0.f in the FMA loop; on tiny the kernel went ~9.3 -> ~6.8 us.)
static inline vf bcast(const float* p) {
#if defined(__AVX512F__)
  return (vf)_mm512_set1_ps(*p);
#elif defined(__AVX2__)
  return (vf)_mm256_set1_ps(*p);
#else
  return (vf)_mm_set1_ps(*p);
#endif
}

inline void store_part(float* d, vf v, int64_t n) {
  if (n >= VL) {
    storeu(d, v);
    return;
  }
  float t[VL];
  storeu(t, v);
  for (int64_t j = 0; j < n; ++j) d[j] = t[j];
}

// y[i, 0:nc] (rows ldy apart) for M pixels ps floats apart from xb.
template <int M, int V>
void sc_fwd_tile(const float* xb, int64_t ps, const int64_t* off, int64_t K, const float* wr, int64_t ldw,
                 const float* bias, bool relu, float* y, int64_t ldy, int64_t nc) {
  vf acc[M][V];
  for (int v = 0; v < V; ++v) {
    const vf b0 = bias ? loadu(bias + v * VL) : vf{};
    for (int i = 0; i < M; ++i) acc[i][v] = b0;
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* xk = xb + off[k];
    vf wv[V];
    for (int v = 0; v < V; ++v) wv[v] = loadu(wr + k * ldw + v * VL);
    for (int i = 0; i < M; ++i) {
      const vf a = bcast(xk + i * ps);
      for (int v = 0; v < V; ++v) acc[i][v] += a * wv[v];
    }
  }
  for (int i = 0; i < M; ++i)
    for (int v = 0; v < V; ++v) {
      vf r = acc[i][v];
      if (relu) r = vmax(r, vf{});
      store_part(y + i * ldy + v * VL, r, nc - v * VL);
    }
}

// grad_x with output pixels in vector lanes: out[kk*ldo + j] = sum_o wk[o*ldw + kk] gyT[o*ldg + j]
// for KB taps kk and j < V*VL (one row of the channels-first gcol).
template <int KB, int V>
void sc_gx_tile(const float* gyt, int64_t ldg, int64_t OC, const float* wk, int64_t ldw, float* out, int64_t ldo) {
  vf acc[KB][V];
  for (int k = 0; k < KB; ++k)
    for (int v = 0; v < V; ++v) acc[k][v] = vf{};
  for (int64_t o = 0; o < OC; ++o) {
    vf gv[V];
    for (int v = 0; v < V; ++v) gv[v] = loadu(gyt + o * ldg + v * VL);
    for (int k = 0; k < KB; ++k) {
      const vf a = bcast(wk + o * ldw + k);
      for (int v = 0; v < V; ++v) acc[k][v] += a * gv[v];
    }
  }
  for (int k = 0; k < KB; ++k)
    for (int v = 0; v < V; ++v) storeu(out + k * ldo + v * VL, acc[k][v]);
}

// Pixels of `nimg` images (x at xs + n*img + oh*rstep + ow*ps; gy rows ldg apart): out[kk][0:V*VL]
// = sum_p x(p, off[kk]) gy[p], and with B, outb[0:V*VL] = sum_p gy[p].
struct GwLoop {
  const float* x;
  int64_t img, rstep, ps, OH, OW, nimg;
  const float* g;
  int64_t ldg;
};

template <int KB, int V, bool B>
void sc_gw_pass(const GwLoop& a, const int64_t* off, float* out, int64_t ldo, float* outb) {
  vf acc[KB][V], accb[V];
  for (int v = 0; v < V; ++v) {
    accb[v] = vf{};
    for (int k = 0; k < KB; ++k) acc[k][v] = vf{};
  }
  int64_t o[KB];
  for (int k = 0; k < KB; ++k) o[k] = off[k];
  const float* gp = a.g;
  for (int64_t n = 0; n < a.nimg; ++n)
    for (int64_t oh = 0; oh < a.OH; ++oh) {
      const float* xr = a.x + n * a.img + oh * a.rstep;
      for (int64_t ow = 0; ow < a.OW; ++ow, gp += a.ldg) {
        const float* xb = xr + ow * a.ps;
        vf gv[V];
        for (int v = 0; v < V; ++v) gv[v] = loadu(gp + v * VL);
        if (B)
          for (int v = 0; v < V; ++v) accb[v] += gv[v];
        for (int k = 0; k < KB; ++k) {
          const vf xv = bcast(xb + o[k]);
          for (int v = 0; v < V; ++v) acc[k][v] += xv * gv[v];
        }
      }
    }
  for (int k = 0; k < KB; ++k)
    for (int v = 0; v < V; ++v) storeu(out + k * ldo + v * VL, acc[k][v]);
  if (B)
    for (int v = 0; v < V; ++v) storeu(outb + v * VL, accb[v]);
}

using ScFwdFn = void (*)(const float*, int64_t, const int64_t*, int64_t, const float*, int64_t, const float*, bool,
                         float*, int64_t, int64_t);
using ScGxFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t);
using ScGwFn = void (*)(const GwLoop&, const int64_t*, float*, int64_t, float*);

template <int V, size_t... I>
constexpr std::array<ScFwdFn, sizeof...(I)> sc_fwd_table(std::index_sequence<I...>) {
  return {&sc_fwd_tile<int(I) + 1, V>...};
}
template <int V, size_t... I>
constexpr std::array<ScGxFn, sizeof...(I)> sc_gx_table(std::index_sequence<I...>) {
  return {&sc_gx_tile<int(I) + 1, V>...};
}
template <int V, bool B, size_t... I>
constexpr std::array<ScGwFn, sizeof...(I)> sc_gw_table(std::index_sequence<I...>) {
  return {&sc_gw_pass<int(I) + 1, V, B>...};
}
constexpr auto kScFwd1 = sc_fwd_table<1>(std::make_index_sequence<kDM>{});
constexpr auto kScFwd2 = sc_fwd_table<2>(std::make_index_sequence<kDM>{});
constexpr auto kScGx1 = sc_gx_table<1>(std::make_index_sequence<kDK>{});
constexpr auto kScGx2 = sc_gx_table<2>(std::make_index_sequence<kDK>{});
constexpr auto kScGw1 = sc_gw_table<1, false>(std::make_index_sequence<kDK>{});
constexpr auto kScGw2 = sc_gw_table<2, false>(std::make_index_sequence<kDK>{});
constexpr auto kScGw1b = sc_gw_table<1, true>(std::make_index_sequence<kDK>{});
constexpr auto kScGw2b = sc_gw_table<2, true>(std::make_index_sequence<kDK>{});

#pragma GCC visibility pop

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
