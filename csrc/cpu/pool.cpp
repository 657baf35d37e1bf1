// pool.cpp: max_pool2d forward and backward, channels first or last, compiled per ISA.
// Channels last works on whole rows of C floats per window tap (vectorised over C, the
// running argmax kept in 32-bit lanes); channels first works plane by plane. Padding is
// implicit -inf, so every window holds at least one real element (padding <= kernel / 2
// is checked by the binding). Ties: the first maximum in row-major window order wins (NaN
// counts as a maximum), as in torch.
//
// Forward writes y and, on request, flat int64 indices (torch's) or one-byte window
// positions (pool.h); with relu it writes max(y, 0), and a window whose maximum is not > 0
// gets kPoolNoGrad (the gradient of relu(max) is 0 there), so the backward applies the
// ReLU gradient for free. It reports whether every output is finite (NaN and +inf reach
// the output of their window), which replaces a separate scan of y.
//
// Backward: when the windows tile the input (stride == kernel, no padding: the Keras
// pools) every input element belongs to at most one window, so grad_x is written once,
// row of windows by row of windows, by comparing each element's position with its
// window's index (no zero fill of the covered part, no scatter); a flat index from the
// caller that lies outside its window sends the call to the scatter below. Otherwise
// grad_x is zeroed and the gradients are scattered image by image (channels last) or
// plane by plane, so no two threads write the same element. Indices are range-checked while they are read and a
// bad one is never written through; the kernel reports it and the binding raises.
//
// Not here: validation (bindings/conv.cpp), ceil_mode, dilation, float64.
// Tests: tests/test_pool.py.
#include "cpu/pool.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/conv.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {
namespace {

enum Tok { kNone = 0, kFlat = 1, kWin = 2 };

typedef long long vl __attribute__((vector_size(VL * 8)));
typedef unsigned long long vul __attribute__((vector_size(VL * 8)));
typedef unsigned char vb __attribute__((vector_size(VL)));

inline bool better(float v, float m) { return v > m || v != v; }

inline bool nonfinite(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return (b & 0x7f800000u) == 0x7f800000u;
}

// One scalar output o: the fused ReLU (a window whose maximum is not > 0 passes no gradient),
// then y and the index of kind T. Returns whether the stored value is NaN or inf.
template <int T, bool RELU>
inline bool put1(float m, int64_t a, int64_t o, float* y, int64_t* idx, uint8_t* win) {
  if (RELU) {
    if (T == kWin && !(m > 0)) a = kPoolNoGrad;
    m = m < 0 ? 0.f : m;
  }
  y[o] = m;
  if (T == kFlat) idx[o] = a;
  if (T == kWin) win[o] = (uint8_t)a;
  return nonfinite(m);
}

// One window: unclipped origin (h0u, w0u) in the input; its taps inside the input are
// [h0, h1) x [w0, w1).
struct Win {
  int64_t h0u, w0u, h0, h1, w0, w1;
};

inline Win window(const PoolShape& s, int64_t oh, int64_t ow) {
  Win r;
  r.h0u = oh * s.sh - s.ph;
  r.w0u = ow * s.sw - s.pw;
  r.h0 = std::max<int64_t>(r.h0u, 0);
  r.w0 = std::max<int64_t>(r.w0u, 0);
  r.h1 = std::min(r.h0u + s.KH, s.H);
  r.w1 = std::min(r.w0u + s.KW, s.W);
  return r;
}

// The index a tap (h, w) is recorded by: flat h * W + w, or its window position.
template <int T>
inline int64_t tok(const PoolShape& s, const Win& r, int64_t h, int64_t w) {
  return T == kWin ? (h - r.h0u) * s.KW + (w - r.w0u) : h * s.W + w;
}

// Max and first argmax (token T) over one window of channel c; p points at x's image (or
// plane) and `step` is the distance between neighbouring w (C for channels last, 1 for
// channels first).
template <int T>
inline float argmax1(const PoolShape& s, const Win& r, const float* p, int64_t step, int64_t& a) {
  float m = p[(r.h0 * s.W + r.w0) * step];
  a = tok<T>(s, r, r.h0, r.w0);
  for (int64_t h = r.h0; h < r.h1; ++h)
    for (int64_t w = r.w0; w < r.w1; ++w) {
      const float v = p[(h * s.W + w) * step];
      if (better(v, m)) {
        m = v;
        a = tok<T>(s, r, h, w);
      }
    }
  return m;
}

// Channels last, VL channels from c: max and first argmax (token T, in 32-bit lanes).
template <int T>
inline vf argmax_v(const PoolShape& s, const Win& r, const float* xn, int64_t c, vi& a) {
  const int64_t C = s.C;
  vf m = loadu(xn + (r.h0 * s.W + r.w0) * C + c);
  a = vi{} + (int)tok<T>(s, r, r.h0, r.w0);
  for (int64_t h = r.h0; h < r.h1; ++h)
    for (int64_t w = (h == r.h0 ? r.w0 + 1 : r.w0); w < r.w1; ++w) {
      const vf v = loadu(xn + (h * s.W + w) * C + c);
      const vi t = (v > m) | (v != v);
      m = t ? v : m;
      if (T != kNone) a = t ? (vi{} + (int)tok<T>(s, r, h, w)) : a;
    }
  return m;
}

// ------------------------------------------------------------------ tiled windows
// Stride == kernel and no padding (the Keras pools): window (oh, ow) covers input rows
// [oh * KH, oh * KH + KH) and columns [ow * KW, ow * KW + KW). One output row at a time;
// KH_ / KW_ fix the window at compile time (0: taken from KHr / KWr at run time), so the
// 2x2 and 1x2 windows of the mission's models unroll completely. Every size is passed by
// value: with the struct behind a reference, each byte store of the window indices made
// the compiler reload all of its fields.

struct Tile {
  int64_t W, C, OW, KH, KW, hw;
};

template <int T, bool RELU, int KH_, int KW_>
inline void fwd_tiled_row(const Tile& tl, const float* xr, int64_t h0, float* yr, int64_t* ir, uint8_t* wr,
                          vi& badv, bool& bads) {
  const int64_t W = tl.W, C = tl.C, OW = tl.OW;
  const int64_t KH = KH_ ? KH_ : tl.KH, KW = KW_ ? KW_ : tl.KW;
  for (int64_t ow = 0; ow < OW; ++ow) {
    const float* xb = xr + ow * KW * C;
    const int64_t w0 = ow * KW, o = ow * C;
    int64_t c = 0;
    for (; c + VL <= C; c += VL) {
      vf m = loadu(xb + c);
      vi a = vi{} + (int)(T == kWin ? 0 : h0 * W + w0);
      for (int64_t i = 0; i < KH; ++i)
        for (int64_t j = (i == 0 ? 1 : 0); j < KW; ++j) {
          const vf v = loadu(xb + (i * W + j) * C + c);
          const vi t = (v > m) | (v != v);
          m = t ? v : m;
          if (T != kNone) a = t ? (vi{} + (int)(T == kWin ? i * KW + j : (h0 + i) * W + w0 + j)) : a;
        }
      if (RELU) {
        if (T == kWin) a = m > 0.f ? a : (vi{} + (int)kPoolNoGrad);
        m = m < 0.f ? vf{} : m;  // keeps NaN
      }
      badv |= ((vi)m & 0x7f800000) == 0x7f800000;
      storeu(yr + o + c, m);
      if (T == kFlat) {
        const vl aw = __builtin_convertvector(a, vl);
        std::memcpy(ir + o + c, &aw, sizeof(aw));
      } else if (T == kWin) {
        const vb ab = __builtin_convertvector(a, vb);
        std::memcpy(wr + o + c, &ab, sizeof(ab));
      }
    }
    for (; c < C; ++c) {
      float m = xb[c];
      int64_t a = T == kWin ? 0 : h0 * W + w0;
      for (int64_t i = 0; i < KH; ++i)
        for (int64_t j = 0; j < KW; ++j) {
          const float v = xb[(i * W + j) * C + c];
          if (better(v, m)) {
            m = v;
            a = T == kWin ? i * KW + j : (h0 + i) * W + w0 + j;
          }
        }
      bads |= put1<T, RELU>(m, a, o + c, yr, ir, wr);
    }
  }
}

// grad_x of one row of windows: every element of the window gets its output's gradient if
// it is the recorded argmax, else 0 (T = kNone: the argmax is recomputed from x). A flat
// index that matches no element of its own window sets missv / misss (its gradient belongs
// elsewhere; backward_t then scatters instead).
template <int T, int KH_, int KW_>
inline void bwd_tiled_row(const Tile& tl, const float* gr, const int64_t* ir, const uint8_t* wr, const float* xr,
                          float* gxr, int64_t h0, vi& badv, bool& bads, vi& missv, bool& misss) {
  const int64_t W = tl.W, C = tl.C, OW = tl.OW, hw = tl.hw;
  const int64_t KH = KH_ ? KH_ : tl.KH, KW = KW_ ? KW_ : tl.KW, kk = KH * KW;
  for (int64_t ow = 0; ow < OW; ++ow) {
    const int64_t w0 = ow * KW, o = ow * C;
    float* gb = gxr + w0 * C;
    int64_t c = 0;
    for (; c + VL <= C; c += VL) {
      vi a;
      if (T == kFlat) {
        vl a64;
        std::memcpy(&a64, ir + o + c, sizeof(a64));
        badv |= __builtin_convertvector((vul)a64 >= (vul)(vl{} + hw), vi);
        a = __builtin_convertvector(a64, vi);  // truncates only values already flagged bad
      } else if (T == kWin) {
        vb ab;
        std::memcpy(&ab, wr + o + c, sizeof(ab));
        a = __builtin_convertvector(ab, vi);
        badv |= (a >= (int)kk) & (a != (int)kPoolNoGrad);
      } else {
        const float* xb = xr + w0 * C + c;
        vf m = loadu(xb);
        a = vi{};
        for (int64_t i = 0; i < KH; ++i)
          for (int64_t j = (i == 0 ? 1 : 0); j < KW; ++j) {
            const vf v = loadu(xb + (i * W + j) * C);
            const vi t = (v > m) | (v != v);
            m = t ? v : m;
            a = t ? (vi{} + (int)(i * KW + j)) : a;
          }
      }
      const vf gv = loadu(gr + o + c);
      vi hit = vi{};
      for (int64_t i = 0; i < KH; ++i)
        for (int64_t j = 0; j < KW; ++j) {
          const vi eq = a == (int)(T == kFlat ? (h0 + i) * W + w0 + j : i * KW + j);
          if (T == kFlat) hit |= eq;
          storeu(gb + (i * W + j) * C + c, eq ? gv : vf{});
        }
      if (T == kFlat) missv |= ~hit;
    }
    for (; c < C; ++c) {
      int64_t a;
      if (T == kFlat) {
        a = ir[o + c];
        bads |= (uint64_t)a >= (uint64_t)hw;
      } else if (T == kWin) {
        a = wr[o + c];
        bads |= a >= kk && a != kPoolNoGrad;
      } else {
        const float* xb = xr + w0 * C + c;
        float m = xb[0];
        a = 0;
        for (int64_t i = 0; i < KH; ++i)
          for (int64_t j = 0; j < KW; ++j)
            if (better(xb[(i * W + j) * C], m)) {
              m = xb[(i * W + j) * C];
              a = i * KW + j;
            }
      }
      const float g = gr[o + c];
      bool hit = false;
      for (int64_t i = 0; i < KH; ++i)
        for (int64_t j = 0; j < KW; ++j) {
          const bool eq = a == (T == kFlat ? (h0 + i) * W + w0 + j : i * KW + j);
          if (T == kFlat) hit |= eq;
          gb[(i * W + j) * C + c] = eq ? g : 0.f;
        }
      if (T == kFlat) misss |= !hit;
    }
  }
}

inline bool is_tiled(const PoolShape& s) { return s.sh == s.KH && s.sw == s.KW && s.ph == 0 && s.pw == 0; }

template <int T, bool RELU>
bool forward_tiled_cl(const PoolShape& s, const float* x, float* y, int64_t* idx, uint8_t* win) {
  const Tile tl{s.W, s.C, s.OW, s.KH, s.KW, s.H * s.W};
  const int64_t OH = s.OH, H = s.H, OW = s.OW, C = s.C, KH = s.KH, KW = s.KW;
  std::atomic<bool> bad{false};
  parallel_for(s.N * OH, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, OW * C)), [&](int64_t b, int64_t e) {
    vi badv = vi{};
    bool bads = false;
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / OH, oh = t % OH, h0 = oh * KH;
      const float* xr = x + (n * H + h0) * tl.W * C;
      float* yr = y + t * OW * C;
      int64_t* ir = idx ? idx + t * OW * C : nullptr;
      uint8_t* wr = win ? win + t * OW * C : nullptr;
      if (KH == 2 && KW == 2)
        fwd_tiled_row<T, RELU, 2, 2>(tl, xr, h0, yr, ir, wr, badv, bads);
      else if (KH == 1 && KW == 2)
        fwd_tiled_row<T, RELU, 1, 2>(tl, xr, h0, yr, ir, wr, badv, bads);
      else
        fwd_tiled_row<T, RELU, 0, 0>(tl, xr, h0, yr, ir, wr, badv, bads);
    }
    for (int i = 0; i < VL; ++i) bads |= badv[i] != 0;
    if (bads) bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load();
}

// ------------------------------------------------------------------ forward

template <int T, bool RELU>
bool forward_cl(const PoolShape& s_, const float* x, float* y, int64_t* idx, uint8_t* win) {
  const int64_t C = s_.C;
  std::atomic<bool> bad{false};
  parallel_for(s_.N * s_.OH, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s_.OW * C)), [&](int64_t b, int64_t e) {
    const PoolShape s = s_;  // a local copy: stores through y/win cannot alias it
    // argmax_v keeps flat indices in 32-bit lanes: planes of 2^31 elements or more take the
    // scalar loop.
    const bool vec = T != kFlat || s.H * s.W < (int64_t(1) << 31);
    vi badv = vi{};
    bool bads = false;
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / s.OH, oh = t % s.OH;
      const float* xn = x + n * s.H * s.W * C;
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        const Win r = window(s, oh, ow);
        const int64_t o = ((n * s.OH + oh) * s.OW + ow) * C;
        int64_t c = 0;
        for (; vec && c + VL <= C; c += VL) {
          vi a;
          vf m = argmax_v<T>(s, r, xn, c, a);
          if (RELU) {
            if (T == kWin) a = m > 0.f ? a : (vi{} + (int)kPoolNoGrad);
            m = m < 0.f ? vf{} : m;  // keeps NaN
          }
          badv |= ((vi)m & 0x7f800000) == 0x7f800000;
          storeu(y + o + c, m);
          if (T == kFlat) {
            const vl aw = __builtin_convertvector(a, vl);
            std::memcpy(idx + o + c, &aw, sizeof(aw));
          } else if (T == kWin) {
            const vb ab = __builtin_convertvector(a, vb);
            std::memcpy(win + o + c, &ab, sizeof(ab));
          }
        }
        for (; c < C; ++c) {
          int64_t a;
          const float m = argmax1<T>(s, r, xn + c, C, a);
          bads |= put1<T, RELU>(m, a, o + c, y, idx, win);
        }
      }
    }
    for (int i = 0; i < VL; ++i) bads |= badv[i] != 0;
    if (bads) bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load();
}

template <int T, bool RELU>
bool forward_cf(const PoolShape& s_, const float* x, float* y, int64_t* idx, uint8_t* win) {
  std::atomic<bool> bad{false};
  parallel_for(s_.N * s_.C, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s_.H * s_.W)), [&](int64_t b, int64_t e) {
    const PoolShape s = s_;  // a local copy: stores through y/win cannot alias it
    bool bads = false;
    for (int64_t pl = b; pl < e; ++pl) {
      const float* xp = x + pl * s.H * s.W;
      const int64_t o0 = pl * s.OH * s.OW;
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const Win r = window(s, oh, ow);
          int64_t a;
          const float m = argmax1<T>(s, r, xp, 1, a);
          bads |= put1<T, RELU>(m, a, o0 + oh * s.OW + ow, y, idx, win);
        }
    }
    if (bads) bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load();
}

template <size_t... I>
inline vf even_lanes(vf a, vf b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, (2 * I)...);
}
template <size_t... I>
inline vf odd_lanes(vf a, vf b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, (2 * I + 1)...);
}

// 2x2 windows of one row pair, outputs [ow, ow + n), n <= VL: the 4 taps of VL windows as 4
// vectors (even and odd lanes of two row loads), argmax by selects in argmax1's order.
template <int T, bool RELU>
inline bool two_by_two_v(const float* r0, const float* r1, int64_t W, int64_t ow, int n, int64_t oh, float* y,
                         int64_t* idx, uint8_t* win) {
  const int64_t c0 = 2 * ow;
  const int l0 = static_cast<int>(std::min<int64_t>(VL, W - c0)), l1 = static_cast<int>(std::min<int64_t>(VL, W - c0 - VL));
  const vf a0 = loadu_n(r0 + c0, l0), a1 = l1 > 0 ? loadu_n(r0 + c0 + VL, l1) : vf{};
  const vf b0 = loadu_n(r1 + c0, l0), b1 = l1 > 0 ? loadu_n(r1 + c0 + VL, l1) : vf{};
  constexpr auto seq = std::make_index_sequence<VL>{};
  const vf e0 = even_lanes(a0, a1, seq), o0 = odd_lanes(a0, a1, seq);
  const vf e1 = even_lanes(b0, b1, seq), o1 = odd_lanes(b0, b1, seq);
  vf m = e0;
  vi k = vi{};
  vi t = (o0 > m) | (o0 != o0);
  m = t ? o0 : m;
  k = t ? vi{} + 1 : k;
  t = (e1 > m) | (e1 != e1);
  m = t ? e1 : m;
  k = t ? vi{} + 2 : k;
  t = (o1 > m) | (o1 != o1);
  m = t ? o1 : m;
  k = t ? vi{} + 3 : k;
  float mv[VL];
  int kv[VL];
  storeu(mv, m);
  std::memcpy(kv, &k, sizeof kv);
  bool bads = false;
  for (int i = 0; i < n; ++i)  // window position kh * 2 + kw is k itself; flat: (2 oh + kh) W + 2 (ow + i) + kw
    bads |= put1<T, RELU>(mv[i], T == kWin ? kv[i] : (2 * oh + (kv[i] >> 1)) * W + 2 * (ow + i) + (kv[i] & 1), i, y,
                          idx, win);
  return bads;
}

// Channels first, 2x2 windows that tile the input (stride 2, no padding), VL outputs at a time
// (two_by_two_v). The mission CNN's first pool in NCHW (N32 C32 30x30, flat indices) took
// ~2.3 ms on 2 threads through forward_cf's clipped windows, ~1.7 ms with scalar loops over
// the rows (the argmax's branches mispredict), ~0.4 ms vectorised. Same scan order and tie /
// NaN rule (better) as argmax1, so the same maxima and indices.
template <int T, bool RELU>
bool forward_cf_2x2(const PoolShape& s_, const float* x, float* y, int64_t* idx, uint8_t* win) {
  std::atomic<bool> bad{false};
  parallel_for(s_.N * s_.C, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s_.H * s_.W)), [&](int64_t b, int64_t e) {
    const PoolShape s = s_;  // a local copy: stores through y/win cannot alias it
    const int64_t W = s.W, OW = s.OW;
    bool bads = false;
    for (int64_t pl = b; pl < e; ++pl)
      for (int64_t oh = 0; oh < s.OH; ++oh) {
        const float* r0 = x + pl * s.H * W + 2 * oh * W;
        const int64_t o = (pl * s.OH + oh) * OW;
        for (int64_t ow = 0; ow < OW; ow += VL)
          bads |= two_by_two_v<T, RELU>(r0, r0 + W, W, ow, static_cast<int>(std::min<int64_t>(VL, OW - ow)), oh,
                                        y + o + ow, T == kFlat ? idx + o + ow : nullptr,
                                        T == kWin ? win + o + ow : nullptr);
      }
    if (bads) bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load();
}

template <int T, bool RELU>
bool forward_t(const PoolShape& s, const float* x, float* y, int64_t* idx, uint8_t* win) {
  if (!s.cl && is_tiled(s) && s.KH == 2 && s.KW == 2) return forward_cf_2x2<T, RELU>(s, x, y, idx, win);
  if (!s.cl) return forward_cf<T, RELU>(s, x, y, idx, win);
  if (is_tiled(s) && s.H * s.W < (int64_t(1) << 31)) return forward_tiled_cl<T, RELU>(s, x, y, idx, win);
  return forward_cl<T, RELU>(s, x, y, idx, win);
}

template <bool RELU>
bool forward_r(const PoolShape& s, const float* x, float* y, int64_t* idx, uint8_t* win) {
  if (idx) return forward_t<kFlat, RELU>(s, x, y, idx, nullptr);
  if (win) return forward_t<kWin, RELU>(s, x, y, nullptr, win);
  return forward_t<kNone, RELU>(s, x, y, nullptr, nullptr);
}

// ------------------------------------------------------------------ backward

// Windows tile the input (uncovered: the last W % KW columns and H % KH rows, zeroed
// here). Parallel over rows of windows. *miss: some flat index lies outside its window.
template <int T>
bool backward_tiled_cl(const PoolShape& s, const float* gy, const float* x, const int64_t* idx, const uint8_t* win,
                       float* gx, bool* miss) {
  const Tile tl{s.W, s.C, s.OW, s.KH, s.KW, s.H * s.W};
  const int64_t OH = s.OH, H = s.H, W = s.W, OW = s.OW, C = s.C, KH = s.KH, KW = s.KW;
  const int64_t Wc = OW * KW;  // covered columns
  std::atomic<bool> bad{false}, missed{false};
  parallel_for(s.N * OH, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, KH * W * C)), [&](int64_t b, int64_t e) {
    vi badv = vi{}, missv = vi{};
    bool bads = false, misss = false;
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / OH, oh = t % OH, h0 = oh * KH;
      float* gxr = gx + (n * H + h0) * W * C;
      if (Wc < W)
        for (int64_t i = 0; i < KH; ++i) std::memset(gxr + (i * W + Wc) * C, 0, sizeof(float) * (W - Wc) * C);
      if (oh == OH - 1 && OH * KH < H)
        std::memset(gx + (n * H + OH * KH) * W * C, 0, sizeof(float) * (H - OH * KH) * W * C);
      const float* gr = gy + t * OW * C;
      const int64_t* ir = idx ? idx + t * OW * C : nullptr;
      const uint8_t* wr = win ? win + t * OW * C : nullptr;
      const float* xr = x + (n * H + h0) * W * C;
      if (KH == 2 && KW == 2)
        bwd_tiled_row<T, 2, 2>(tl, gr, ir, wr, xr, gxr, h0, badv, bads, missv, misss);
      else if (KH == 1 && KW == 2)
        bwd_tiled_row<T, 1, 2>(tl, gr, ir, wr, xr, gxr, h0, badv, bads, missv, misss);
      else
        bwd_tiled_row<T, 0, 0>(tl, gr, ir, wr, xr, gxr, h0, badv, bads, missv, misss);
    }
    for (int i = 0; i < VL; ++i) {
      bads |= badv[i] != 0;
      misss |= missv[i] != 0;
    }
    if (bads) bad.store(true, std::memory_order_relaxed);
    if (misss) missed.store(true, std::memory_order_relaxed);
  });
  *miss = missed.load();
  return !bad.load();
}

// Flat position of window position t of window r, or -1 when it lies in the padding.
inline int64_t win_pos(const PoolShape& s, const Win& r, int64_t t) {
  const int64_t h = r.h0u + t / s.KW, w = r.w0u + t % s.KW;
  return (h < 0 || h >= s.H || w < 0 || w >= s.W) ? -1 : h * s.W + w;
}

// Any layout and window geometry: zero grad_x, then scatter-add each output's gradient
// to its argmax. Parallel over images (channels last) or planes (channels first); `step`
// is the distance between neighbouring w within what one task owns.
template <int T>
bool backward_scatter(const PoolShape& s_, const float* gy, const float* x, const int64_t* idx, const uint8_t* win,
                      float* gx) {
  const int64_t hw = s_.H * s_.W, kk = s_.KH * s_.KW;
  const int64_t C = s_.cl ? s_.C : 1;  // channels per task
  const int64_t tasks = s_.cl ? s_.N : s_.N * s_.C;
  std::atomic<bool> bad{false};
  parallel_for(tasks, s_.cl ? 1 : std::max<int64_t>(1, 4096 / std::max<int64_t>(1, hw)), [&](int64_t b, int64_t e) {
    const PoolShape s = s_;  // a local copy: stores through y/win cannot alias it
    bool bads = false;
    std::vector<int> abuf(T == kNone && s.cl ? s.C : 0);
    for (int64_t k = b; k < e; ++k) {
      float* gk = gx + k * hw * C;
      const float* xk = x + k * hw * C;
      std::memset(gk, 0, sizeof(float) * hw * C);
      if (T == kFlat) {  // no window geometry needed
        const int64_t no = s.OH * s.OW * C;
        const int64_t* ik = idx + k * no;
        const float* gyk = gy + k * no;
        if (C == 1) {
          for (int64_t j = 0; j < no; ++j) {
            const int64_t pos = ik[j];
            bads |= (uint64_t)pos >= (uint64_t)hw;
            if ((uint64_t)pos < (uint64_t)hw) gk[pos] += gyk[j];
          }
          continue;
        }
        for (int64_t j = 0; j < no; j += C)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t pos = ik[j + c];
            bads |= (uint64_t)pos >= (uint64_t)hw;
            if ((uint64_t)pos < (uint64_t)hw) gk[pos * C + c] += gyk[j + c];
          }
        continue;
      }
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const Win r = window(s, oh, ow);
          const int64_t o = ((k * s.OH + oh) * s.OW + ow) * C;
          int64_t cv = 0;  // channels [0, cv): argmax recomputed VL at a time into abuf
          if (T == kNone && s.cl && hw < (int64_t(1) << 31))
            for (; cv + VL <= C; cv += VL) {
              vi a;
              argmax_v<kFlat>(s, r, xk, cv, a);
              std::memcpy(abuf.data() + cv, &a, sizeof(a));
            }
          for (int64_t c = 0; c < C; ++c) {
            int64_t pos;
            if (T == kFlat) {
              pos = idx[o + c];
              if ((uint64_t)pos >= (uint64_t)hw) {
                bads = true;
                continue;
              }
            } else if (T == kWin) {
              const int64_t a = win[o + c];
              if (a == kPoolNoGrad) continue;
              pos = a < kk ? win_pos(s, r, a) : -1;
              if (pos < 0) {
                bads = true;
                continue;
              }
            } else if (c < cv) {
              pos = abuf[c];
            } else {
              argmax1<kFlat>(s, r, xk + c, C, pos);
            }
            gk[pos * C + c] += gy[o + c];
          }
        }
    }
    if (bads) bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load();
}

template <int T>
bool backward_t(const PoolShape& s, const float* gy, const float* x, const int64_t* idx, const uint8_t* win,
                float* gx) {
  if (s.cl && is_tiled(s) && s.H * s.W < (int64_t(1) << 31)) {
    bool miss = false;
    const bool ok = backward_tiled_cl<T>(s, gy, x, idx, win, gx, &miss);
    // A caller's flat index outside its own window (never one of the forward's): the tiled
    // pass dropped that gradient, so redo the whole call as a scatter-add, which puts every
    // gradient where its index says, as the channels-first path and torch do.
    if (!miss) return ok;
  }
  return backward_scatter<T>(s, gy, x, idx, win, gx);
}

}  // namespace

bool pool_forward(const PoolShape& s, const float* x, float* y, int64_t* idx, uint8_t* win, bool relu) {
  return relu ? forward_r<true>(s, x, y, idx, win) : forward_r<false>(s, x, y, idx, win);
}

bool pool_backward(const PoolShape& s, const float* gy, const float* x, const int64_t* idx, const uint8_t* win,
                   float* gx) {
  if (idx) return backward_t<kFlat>(s, gy, x, idx, nullptr, gx);
  if (win) return backward_t<kWin>(s, gy, x, nullptr, win, gx);
  return backward_t<kNone>(s, gy, x, nullptr, nullptr, gx);
}

const PoolKernels& pool_kernels() {
  static const PoolKernels k{&pool_forward, &pool_backward};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
