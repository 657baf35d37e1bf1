// conv_winograd.cpp: Winograd convolutions for channels last without groups, stride 1,
// dilation 1, compiled once per ISA: F(2x2, 3x3) for 3x3 kernels and F(2, 3) along W for 1x3
// ones (conv1d k3), forward (grad_x too: conv.cpp runs it as the forward conv of gy with the
// flipped kernel), and their transposes F(3x3, 2x2) and F(3, 2) for grad_w (+ grad_b).
// Transforms are vectorised over channels (contiguous in NHWC); the products per transform
// point run on the direct kernels' register tiles (conv_tiles.h), tiles as pixels and
// channels as taps. conv_plan (conv.cpp) uses them for C, OC >= 16.
//
// Not here: the choice of algorithm and its conditions (conv.cpp), other kernel sizes,
// strides and dilations (conv_direct.cpp), groups and channels first (conv_im2col.cpp).
// Tests: tests/test_conv_direct.py (against torch and the _naive kernels),
// tests/test_conv_algorithms.py.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <memory>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"
#include "common/transpose.h"
#include "cpu/conv.h"
#include "cpu/conv_common.h"
#include "cpu/conv_tiles.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

// ---- Winograd F(2x2, 3x3), channels last, stride 1, dilation 1, no groups ----
// y = A^T [ (G g G^T) . (B^T d B) ] A per 2x2 output tile: 16 GEMMs of (tiles x C) @ (C x OC)
// replace one (4*tiles x 9C) @ (9C x OC), 2.25x fewer multiply-adds. Transforms are
// vectorised over channels (contiguous in NHWC). Used for C, OC >= 16 where the GEMMs stay
// efficient. mid (N32 64->64 56x56): 82 ms im2col vs ~55 ms here, single thread (Zen 4).
namespace {

// Tiles per task (V: 16*kWinoTiles*C floats, M: 16*kWinoTiles*OC). 56, 98 and 140 were within
// noise of each other on mid and cnn-a2 (single thread, loaded 2-core Zen 4 VM); 56 (since
// the products run in register tiles, 56 vs 112 also tie) splits cnn-a2 into 28 tasks and its
// grad_x into 37, which 2 threads share more evenly than 14 and 19.
constexpr int64_t kWinoTiles = 56;

// U[xi][c][o] = (G g G^T)[i][j], xi = 4i + j, g = w[o, c] (3x3). Per input channel c the taps
// are first gathered output-channel-contiguous, then transformed vectorised over o into the
// contiguous rows U[xi][c][.]. The earlier scalar loop with o outermost (every store to another
// cache line) took ~100 us for 64 -> 64 channels, more than a batch-1 convolution itself:
// 1x6x6x64 -> 64 went from 145 to 47 us per call. U now lives in the calling thread's scratch
// (a fresh 128 KiB vector each call was mapped and first-touched every time), the taps are
// gathered by one blocked transpose, and large weights are shared by the pool: a 1x6x6x32 -> 64
// convolution (mostly this transform) ~27-35 -> ~20 us per call.
thread_local std::vector<float> t_u, t_gt;

// Transformed weights kept per calling thread for the last few weights seen, each with a copy
// of the weights it came from: a call whose weights equal a kept copy bit for bit (memcmp)
// reuses its U. Inference calls a layer again and again with unchanged weights, and at a small
// batch the transform is a large part of the call (1x15x15x32 -> 64: ~10 of ~50 us). The key
// is the content, so a weight written in place (an optimizer step, a user's assignment) or a
// freed and reused address cannot return a stale U; a training step's changed weights fail
// the compare at their first differing element and pay one copy of the weights beside the
// transform. Only weights up to kWinoCacheFloats floats are kept (memory: the copy and U).
constexpr int64_t kWinoCacheFloats = 1 << 18;  // 1 MiB of weights: up to 512 -> 56 channels
constexpr int kWinoCacheEntries = 8;

struct WinoCached {
  const float* w = nullptr;  // where the weights were last read (a hint; the content decides)
  int64_t C = 0, OC = 0, OCp = 0;
  std::vector<float> raw, u;
  uint64_t used = 0;
};
thread_local std::vector<WinoCached> t_wcache;
thread_local uint64_t t_wclock = 0;

void wino_transform(const ConvShape& s, const float* w, int64_t OCp, float* u);

const float* wino_weights(const ConvShape& s, const float* w, int64_t OCp) {
  const WeightPack p = weight_pack(WLayout::kGKCO, 1, s.OC, s.C, 16, OCp);
  const int64_t nw = s.OC * s.C * 9;
  if (nw > kWinoCacheFloats) {
    float* u = scratch(t_u, p.size);
    wino_transform(s, w, OCp, u);
    return u;
  }
  const auto same = [&](const WinoCached& e) { return e.C == s.C && e.OC == s.OC && e.OCp == OCp; };
  WinoCached* hit = nullptr;
  for (auto& e : t_wcache)  // the entry last read from this address first
    if (e.w == w && same(e)) { hit = &e; break; }
  if (hit && std::memcmp(hit->raw.data(), w, nw * sizeof(float)) == 0) {
    hit->used = ++t_wclock;
    return hit->u.data();
  }
  if (!hit) {
    if ((int)t_wcache.size() < kWinoCacheEntries) {
      hit = &t_wcache.emplace_back();
    } else {
      hit = &*std::min_element(t_wcache.begin(), t_wcache.end(),
                               [](const WinoCached& a, const WinoCached& b) { return a.used < b.used; });
    }
  }
  hit->w = w; hit->C = s.C; hit->OC = s.OC; hit->OCp = OCp;
  hit->raw.assign(w, w + nw);
  hit->u.resize(p.size);
  hit->used = ++t_wclock;
  wino_transform(s, w, OCp, hit->u.data());
  return hit->u.data();
}

void wino_transform(const ConvShape& s, const float* w, int64_t OCp, float* u) {
  const WeightPack p = weight_pack(WLayout::kGKCO, 1, s.OC, s.C, 16, OCp);
  const int64_t OC = s.OC;
  // Channels in chunks of at least ~64K taps: below that a second thread's start-up costs more
  // than its share (1x6x6x32 -> 64: 20 us on one thread, 26 split over two).
  const int64_t grain = std::max<int64_t>(8, 65536 / (9 * OC));
  parallel_for(s.C, grain, [&](int64_t cb, int64_t ce) {
    // gt[((c - cb) * 9 + k) * OC + o] = w[o, c, k]: the taps of input channels cb..ce with the
    // output channels contiguous, so the transform below runs vectorised over o; one blocked
    // transpose of w's (OC, nc * 9) slice (gathering per channel read w with a stride of C * 9
    // floats, and a plain transpose stored with a stride of OC: ~40% and ~37% of a
    // 1x6x6x32 -> 64 convolution's time).
    const int64_t nc = ce - cb;
    float* gt = scratch(t_gt, 9 * OC * nc);
    transpose(w + cb * 9, s.C * 9, OC, nc * 9, gt, OC);
    for (int64_t c = cb; c < ce; ++c) {
      float* uc = u + p.at(0, 0, c, 0);  // U[xi][c][o] = uc[xi * p.sk + o]
      const float* g0 = gt + (c - cb) * 9 * OC;
      const int64_t sk = p.sk;
#pragma GCC ivdep
      for (int64_t o = 0; o < OC; ++o) {
        float t[4][3];
        for (int j = 0; j < 3; ++j) {
          const float a = g0[j * OC + o], b = g0[(3 + j) * OC + o], d = g0[(6 + j) * OC + o];
          t[0][j] = a;
          t[1][j] = 0.5f * (a + b + d);
          t[2][j] = 0.5f * (a - b + d);
          t[3][j] = d;
        }
        for (int i = 0; i < 4; ++i) {
          uc[(i * 4 + 0) * sk + o] = t[i][0];
          uc[(i * 4 + 1) * sk + o] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
          uc[(i * 4 + 2) * sk + o] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
          uc[(i * 4 + 3) * sk + o] = t[i][2];
        }
      }
      for (int xi = 0; xi < 16; ++xi)  // the GEMM's padding columns: zero weights
        for (int64_t o = OC; o < OCp; ++o) uc[xi * sk + o] = 0.f;
    }
  });
}


inline vf ld_v(const float* p) { return loadu(p); }
inline void st_v(float* p, vf v) { storeu(p, v); }
inline float ld_s(const float* p) { return *p; }
inline void st_s(float* p, float v) { *p = v; }

// V[xi][c..] = (B^T d B)[i][j] for one tile, channels c .. c + width(T).
template <class T>
inline void wino_in(const float* const p[4][4], float* v, int64_t vs, int64_t c, T (*ld)(const float*),
                    void (*st)(float*, T)) {
  T e[4][4];
  for (int j = 0; j < 4; ++j) {
    const T d0 = ld(p[0][j] + c), d1 = ld(p[1][j] + c), d2 = ld(p[2][j] + c), d3 = ld(p[3][j] + c);
    e[0][j] = d0 - d2;
    e[1][j] = d1 + d2;
    e[2][j] = d2 - d1;
    e[3][j] = d1 - d3;
  }
  for (int i = 0; i < 4; ++i) {
    st(v + (i * 4 + 0) * vs + c, e[i][0] - e[i][2]);
    st(v + (i * 4 + 1) * vs + c, e[i][1] + e[i][2]);
    st(v + (i * 4 + 2) * vs + c, e[i][2] - e[i][1]);
    st(v + (i * 4 + 3) * vs + c, e[i][1] - e[i][3]);
  }
}

// y tile (2x2, rows of dst may be null when outside the output) = A^T m A + bias (relu).
template <class T>
inline void wino_out(const float* m, int64_t ms, const float* b, bool relu, int64_t o, float* const dst[4],
                     T (*ld)(const float*), void (*st)(float*, T)) {
  T r[2][4];
  for (int j = 0; j < 4; ++j) {
    const T q0 = ld(m + j * ms + o), q1 = ld(m + (4 + j) * ms + o), q2 = ld(m + (8 + j) * ms + o),
            q3 = ld(m + (12 + j) * ms + o);
    r[0][j] = q0 + q1 + q2;
    r[1][j] = q1 - q2 - q3;
  }
  const T bo = b ? ld(b + o) : T{} ;
  T out[4];
  for (int i = 0; i < 2; ++i) {
    out[2 * i] = r[i][0] + r[i][1] + r[i][2] + bo;
    out[2 * i + 1] = r[i][1] - r[i][2] - r[i][3] + bo;
  }
  for (int k = 0; k < 4; ++k) {
    if (!dst[k]) continue;
    T v = out[k];
    if (relu) v = v > T{} ? v : T{};
    st(dst[k] + o, v);
  }
}

thread_local std::vector<float> t_v, t_m, t_zero;

// One 1-D input tile of F(2, 3) / F(3, 2): V[xi][c] = (B^T d)[xi], B^T = [1 0 -1 0; 0 1 1 0;
// 0 -1 1 0; 0 1 0 -1], from the 4 pixels p, written at v[xi * vs + c] for c < C.
inline void wino1d_in(const float* const p[4], float* v, int64_t vs, int64_t C) {
  auto tile = [&](auto ld, auto st, int64_t c) {
    const auto d0 = ld(p[0] + c), d1 = ld(p[1] + c), d2 = ld(p[2] + c), d3 = ld(p[3] + c);
    st(v + c, d0 - d2);
    st(v + vs + c, d1 + d2);
    st(v + 2 * vs + c, d2 - d1);
    st(v + 3 * vs + c, d1 - d3);
  };
  int64_t c = 0;
  for (; c + VL <= C; c += VL) tile(ld_v, st_v, c);
  for (; c < C; ++c) tile(ld_s, st_s, c);
}

// The F(2x2, 3x3) input tile at tile row th, column tw of image n of x (channels last):
// V[xi][c] = (B^T d B)[i][j] at v[xi * vs + c], from its 16 pixels (zero, C zeros, where the
// tile hangs over the edge). The forward's and grad_w's tiles.
inline void wino_in_tile(const ConvShape& s, const float* x, int64_t n, int64_t th, int64_t tw, const float* zero,
                         float* v, int64_t vs) {
  const int64_t C = s.C;
  const float* xn = x + n * s.H * s.W * C;
  const int64_t ih0 = 2 * th - s.pt, iw0 = 2 * tw - s.pl;
  const float* p[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int64_t ih = ih0 + i, iw = iw0 + j;
      p[i][j] = (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W) ? xn + (ih * s.W + iw) * C : zero;
    }
  int64_t c = 0;
  for (; c + VL <= C; c += VL) wino_in<vf>(p, v, vs, c, ld_v, st_v);
  for (; c < C; ++c) wino_in<float>(p, v, vs, c, ld_s, st_s);
}

}  // namespace

void conv2d_wino(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y) {
  const int64_t C = s.C, OC = s.OC, TH = (s.OH + 1) / 2, TW = (s.OW + 1) / 2, TT = TH * TW;
  // Tiles are numbered across the whole batch, so a block may span images (small images
  // like 13x13 -> 49 tiles would otherwise give short GEMMs). Fewer than 2 kWinoTiles tiles
  // per thread: blocks of half a thread's share (at least kDM tiles), so each thread
  // transforms only its own tiles and the pool's dynamic split evens out a late start
  // (1x15x15x32 -> 64, 49 tiles, 2 threads: blocks of 13; ~27 -> ~24 us against both threads
  // transforming all 49 for half the output channels each). A tile's products and sums do
  // not depend on the block it is in, so neither does the result.
  const int64_t nth = get_num_threads();
  const int64_t kb = std::min<int64_t>(kWinoTiles, std::max<int64_t>(kDM, (s.N * TT + 2 * nth - 1) / (2 * nth)));
  const int64_t blocks = (s.N * TT + kb - 1) / kb;
  const int64_t OCp = padn(OC);  // GEMM N padded (see padn)
  const float* u = wino_weights(s, w, OCp);
  std::vector<int64_t> ident(C);
  for (int64_t c = 0; c < C; ++c) ident[c] = c;
  // Input tile g = (n, th, tw): V[xi][c] = (B^T d B)[i][j] at v[xi * vs + c], from its 16
  // pixels (the zero row where the tile hangs over the edge).
  auto in_tile = [&](int64_t g, const float* zero, float* v, int64_t vs) {
    wino_in_tile(s, x, g / TT, g % TT / TW, g % TW, zero, v, vs);
  };
  // Output tile g from its 16 sums at m (the 16 matrices ms apart), channels o_lo .. o_hi.
  auto out_tile = [&](int64_t g, const float* m, int64_t ms, int64_t o_lo, int64_t o_hi) {
    const int64_t n = g / TT, th = g % TT / TW, tw = g % TW;
    const int64_t oh = 2 * th, ow = 2 * tw;
    float* y00 = y + ((n * s.OH + oh) * s.OW + ow) * OC;
    const bool r1 = oh + 1 < s.OH, c1 = ow + 1 < s.OW;
    float* dst[4] = {y00, c1 ? y00 + OC : nullptr, r1 ? y00 + s.OW * OC : nullptr,
                     (r1 && c1) ? y00 + (s.OW + 1) * OC : nullptr};
    int64_t o = o_lo;
    for (; o + VL <= o_hi; o += VL) wino_out<vf>(m, ms, b, relu, o, dst, ld_v, st_v);
    for (; o < o_hi; ++o) wino_out<float>(m, ms, b, relu, o, dst, ld_s, st_s);
  };
  // Products of tiles t0 .. t0 + nt (rows of Vx, C floats apart) with U[xi]'s columns ob ..
  // ob + 2 VL into Mx (rows OCp floats apart), in register tiles of near-equal height (tiles
  // as pixels, channels as taps: no packing; sgemm_st packed A and B on every call. Single
  // thread: cnn-a2 forward ~1.6 -> ~1.5 ms, its grad_x ~2.1 -> ~1.9 ms; mid ~48 -> ~41 ms).
  auto products = [&](const float* Vx, int64_t nt, int xi, int64_t ob, float* Mx) {
    const int64_t ntt = (nt + kDM - 1) / kDM, mt = (nt + ntt - 1) / ntt;
    const int64_t nc = std::min<int64_t>(2 * VL, OCp - ob);
    const auto& tab = nc > VL ? kScFwd2 : kScFwd1;
    for (int64_t t0 = 0; t0 < nt; t0 += mt) {
      const int64_t m = std::min(mt, nt - t0);
      tab[m - 1](Vx + t0 * C, C, ident.data(), C, u + xi * C * OCp + ob, OCp, nullptr, false, Mx + t0 * OCp + ob,
                 OCp, nc);
    }
  };
  const int64_t T = s.N * TT, ob_n = OCp / (2 * VL);
  if (T <= 4 * kWinoTiles && 16 * C * OCp * int64_t(sizeof(float)) > (int64_t(2) << 20)) {
    // Few tiles and a U past L2 (ResNet-18's last stage, N8 7x7 512 -> 512: 128 tiles, U 16
    // MB): in blocks of tiles, each block streamed all of U (4 blocks: 64 MB read per call,
    // each weight used by <= 12 tiles at a time). Here the whole batch's tiles go through
    // each step at once: all input transforms, then tasks of one (transform point, 2 VL
    // output channels) over every tile (that strip of U, 64 KB, read once and kept in L2),
    // then all output transforms. Each tile's sums are the same as in blocks, so is y.
    std::unique_ptr<float[]> Vb(new float[static_cast<size_t>(16 * T * C)]);
    std::unique_ptr<float[]> Mb(new float[static_cast<size_t>(16 * T * OCp)]);
    float* V = Vb.get();
    float* M = Mb.get();
    parallel_for(T, 8, [&](int64_t tb, int64_t te) {
      if ((int64_t)t_zero.size() < C) t_zero.assign(C, 0.f);
      for (int64_t g = tb; g < te; ++g) in_tile(g, t_zero.data(), V + g * C, T * C);
    });
    parallel_for(16 * ob_n, 1, [&](int64_t kb0, int64_t kb1) {
      for (int64_t k = kb0; k < kb1; ++k) {
        const int xi = static_cast<int>(k / ob_n);
        products(V + xi * T * C, T, xi, (k % ob_n) * 2 * VL, M + xi * T * OCp);
      }
    });
    parallel_for(T, 8, [&](int64_t tb, int64_t te) {
      for (int64_t g = tb; g < te; ++g) out_tile(g, M + g * OCp, T * OCp, 0, OC);
    });
    return;
  }
  // Fewer tile blocks than threads (a small batch: 1x15x15x32 -> 64 is one block of 49 tiles):
  // the output channels are split too, in runs of 2 VL (the product tiles' width), each task
  // transforming its block's input again (cheap beside its share of the products). One block
  // on one thread left the other idle: 2 threads were slower than 1 at batch 1.
  const int64_t osplit = blocks >= get_num_threads() ? 1 : std::min<int64_t>(ob_n, get_num_threads() / blocks);
  const int64_t ob_per = (ob_n + osplit - 1) / osplit;
  parallel_for(blocks * osplit, 1, [&](int64_t tb, int64_t te) {
    float* V = scratch(t_v, 16 * kb * C);
    float* M = scratch(t_m, 16 * kb * OCp);
    if ((int64_t)t_zero.size() < C) t_zero.assign(C, 0.f);
    const float* zero = t_zero.data();
    for (int64_t tk = tb; tk < te; ++tk) {
      const int64_t task = tk / osplit, os = tk % osplit;
      const int64_t ob_lo = std::min(OCp, os * ob_per * 2 * VL), ob_hi = std::min(OCp, (os + 1) * ob_per * 2 * VL);
      const int64_t o_lo = std::min(OC, ob_lo), o_hi = std::min(OC, ob_hi);
      const int64_t g0 = task * kb, nt = std::min(kb, T - g0);
      // input transform: V[xi][t][c] = (B^T d B)[i][j], the 16 V matrices kb C apart
      for (int64_t t = 0; t < nt; ++t) in_tile(g0 + t, zero, V + t * C, kb * C);
      // M[xi] = V[xi] U[xi]
      for (int xi = 0; xi < 16; ++xi)
        for (int64_t ob = ob_lo; ob < ob_hi; ob += 2 * VL) products(V + xi * kb * C, nt, xi, ob, M + xi * kb * OCp);
      // output transform: y = A^T m A (+ bias, relu)
      for (int64_t t = 0; t < nt; ++t) out_tile(g0 + t, M + t * OCp, kb * OCp, o_lo, o_hi);
    }
  });
}

// ---- Winograd F(2, 3) along W: 1x3 kernels, stride 1, channels last, no groups ----
// The 1-D version of conv2d_wino for the speech convs (conv1d k3 = conv2d 1x3): per tile of 2
// outputs, y = A^T [ (G g) . (B^T d) ], 4 products (C x OC each) instead of 6: 1.5x fewer
// multiply-adds. Used for C, OC >= 16. speech2 (N32 64->64 L63): forward ~0.47 -> ~0.37 ms,
// its grad_x (the same kind of conv) ~0.49 -> ~0.39 ms, single thread.
void conv2d_wino1d(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y) {
  const int64_t C = s.C, OC = s.OC, TW = (s.OW + 1) / 2, NT = s.N * s.OH * TW;
  const int64_t kb = kWinoTiles, OCp = padn(OC);
  // U[xi][c][o] = (G g)[xi], g = w[o, c, 0, 0:3]
  const WeightPack up = weight_pack(WLayout::kGKCO, 1, OC, C, 4, OCp);
  std::vector<float> u(up.size, 0.f), bp;
  for (int64_t c = 0; c < C; ++c) {  // c outer: contiguous rows U[xi][c][.] (see wino_weights)
    float* uc = u.data() + up.at(0, 0, c, 0);
    for (int64_t o = 0; o < OC; ++o) {
      const float* g = w + (o * C + c) * 3;
      const float r[4] = {g[0], 0.5f * (g[0] + g[1] + g[2]), 0.5f * (g[0] - g[1] + g[2]), g[2]};
      for (int xi = 0; xi < 4; ++xi) uc[xi * up.sk + o] = r[xi];
    }
  }
  if (b) bp = pack_weights(b, weight_pack(WLayout::kGKCO, 1, OC, 1, 1, OCp));
  std::vector<int64_t> ident(C);
  for (int64_t c = 0; c < C; ++c) ident[c] = c;
  const int64_t blocks = (NT + kb - 1) / kb;
  parallel_for(blocks, 1, [&](int64_t tb, int64_t te) {
    float* V = scratch(t_v, 4 * kb * C);
    float* M = scratch(t_m, 4 * kb * OCp);
    if ((int64_t)t_zero.size() < C) t_zero.assign(C, 0.f);
    const float* zero = t_zero.data();
    for (int64_t task = tb; task < te; ++task) {
      const int64_t g0 = task * kb, nt = std::min(kb, NT - g0);
      const int64_t vs = kb * C, ms = kb * OCp;
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t r = (g0 + t) / TW, tw = (g0 + t) % TW, n = r / s.OH, oh = r % s.OH;
        const int64_t ih = oh - s.pt, iw0 = 2 * tw - s.pl;
        const float* xr = (ih >= 0 && ih < s.H) ? x + (n * s.H + ih) * s.W * C : nullptr;
        const float* p[4];
        for (int j = 0; j < 4; ++j) p[j] = (xr && iw0 + j >= 0 && iw0 + j < s.W) ? xr + (iw0 + j) * C : zero;
        wino1d_in(p, V + t * C, vs, C);
      }
      const int64_t nq = (nt + kDM - 1) / kDM, mt = (nt + nq - 1) / nq;  // balanced tiles
      for (int xi = 0; xi < 4; ++xi)
        for (int64_t ob = 0; ob < OCp; ob += 2 * VL) {
          const int64_t nc = std::min<int64_t>(2 * VL, OCp - ob);
          const auto& tab = nc > VL ? kScFwd2 : kScFwd1;
          for (int64_t t0 = 0; t0 < nt; t0 += mt) {
            const int64_t m = std::min(mt, nt - t0);
            tab[m - 1](V + xi * vs + t0 * C, C, ident.data(), C, u.data() + xi * C * OCp + ob, OCp, nullptr, false,
                       M + xi * ms + t0 * OCp + ob, OCp, nc);
          }
        }
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t r = (g0 + t) / TW, tw = (g0 + t) % TW;
        float* y0 = y + (r * s.OW + 2 * tw) * OC;
        const bool two = 2 * tw + 1 < s.OW;
        const float* m = M + t * OCp;
        auto out = [&](auto ld, auto st, int64_t o) {
          const auto m0 = ld(m + o), m1 = ld(m + ms + o), m2 = ld(m + 2 * ms + o), m3 = ld(m + 3 * ms + o);
          using T = std::decay_t<decltype(m0)>;
          const T bo = b ? ld(bp.data() + o) : T{};
          T a = m0 + m1 + m2 + bo, c1 = m1 - m2 - m3 + bo;
          if (relu) {
            a = a > T{} ? a : T{};
            c1 = c1 > T{} ? c1 : T{};
          }
          st(y0 + o, a);
          if (two) st(y0 + OC + o, c1);
        };
        int64_t o = 0;
        for (; o + VL <= OC; o += VL) out(ld_v, st_v, o);
        for (; o < OC; ++o) out(ld_s, st_s, o);
      }
    }
  });
}

namespace {

// The driver shared by the Winograd weight gradients, NX transform points per tile and TT
// tiles per image. tile(n, tt, v, vs, u, us, zero, B) writes tile tt of image n: V[xi][c] at
// v[xi * vs + c] (c < C) and U[xi][o] at u[xi * us + o] (o < OC), and adds gy's sums into the
// bias row B; out(macc) turns the summed M[xi][o][c], at macc[(xi * OC + o) * Cp + c], into gw.
template <int NX, class TileFn, class OutFn>
void wino_gw_run(const ConvShape& s, int64_t TT, float* gw, float* gb, TileFn tile, OutFn out) {
  const int64_t C = s.C, OC = s.OC;
  const int64_t Cp = (C + VL - 1) / VL * VL, OCp = (OC + VL - 1) / VL * VL;
  // ~256 tiles per chunk (V and U of a chunk stay in L2 per xi), and >= 8 chunks when N >= 8
  const int64_t per = std::max<int64_t>(1, std::min<int64_t>(256 / TT, s.N / 8));
  const int64_t chunks = (s.N + per - 1) / per, msz = NX * OC * Cp, maxt = per * TT;
  std::vector<float> macc(chunks * msz, 0.f), bacc(chunks * OCp, 0.f);
  std::vector<int64_t> ooff(OC);
  for (int64_t o = 0; o < OC; ++o) ooff[o] = o;
  const int64_t np = (OC + kDK - 1) / kDK, kb = (OC + np - 1) / np;  // balanced blocks of o
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
    float* V = scratch(t_v, NX * maxt * Cp);
    float* U = scratch(t_m, NX * maxt * OCp);
    if ((int64_t)t_zero.size() < std::max(Cp, OCp)) t_zero.assign(std::max(Cp, OCp), 0.f);
    const float* zero = t_zero.data();
    for (int64_t ch = cb; ch < ce; ++ch) {
      const int64_t n0 = ch * per, n1 = std::min(s.N, n0 + per), nt = (n1 - n0) * TT;
      float* M = macc.data() + ch * msz;
      float* B = bacc.data() + ch * OCp;
      const int64_t vs = nt * Cp, us = nt * OCp;  // strides between the NX V and U matrices
      for (int64_t t = 0; t < nt; ++t) {
        float* v = V + t * Cp;
        tile(n0 + t / TT, t % TT, v, vs, U + t * OCp, us, zero, B);
        for (int64_t c = C; c < Cp; ++c)
          for (int xi = 0; xi < NX; ++xi) v[xi * vs + c] = 0.f;
      }
      if (!gw) continue;
      // M[xi][o0 .. o0+kb][c0 .. c0+2VL] = sum_t U[xi][t][o] V[xi][t][c]
      for (int xi = 0; xi < NX; ++xi)
        for (int64_t c0 = 0; c0 < Cp; c0 += 2 * VL) {
          const bool two = Cp - c0 > VL;
          GwLoop a{U + xi * us, 0, 0, OCp, 1, nt, 1, V + xi * vs + c0, Cp};
          for (int64_t o0 = 0; o0 < OC; o0 += kb) {
            const int64_t no = std::min(kb, OC - o0);
            (two ? kScGw2 : kScGw1)[no - 1](a, ooff.data() + o0, M + (xi * OC + o0) * Cp + c0, Cp, nullptr);
          }
        }
    }
  });
  // sum the chunks in order, split over the pool by element ranges
  parallel_for_static(msz, VL, [&](int64_t b, int64_t e) {
    for (int64_t ch = 1; ch < chunks; ++ch) {
      const float* src = macc.data() + ch * msz;
      for (int64_t i = b; i < e; ++i) macc[i] += src[i];
    }
  });
  if (gb) {
    for (int64_t ch = 1; ch < chunks; ++ch)
      for (int64_t o = 0; o < OC; ++o) bacc[o] += bacc[ch * OCp + o];
    for (int64_t o = 0; o < OC; ++o) gb[o] = bacc[o];
  }
  if (gw) out(macc.data(), Cp);
}

}  // namespace

// grad_w by Winograd F(3x3, 2x2): per 2x2 tile of gy and the 4x4 tile of x under it,
// gw += G^T [ (A gy A^T) . (B^T d B) ] G (the transpose of F(2x2, 3x3)), summed over tiles in
// the transformed domain, M[xi][o][c] = sum_t U[xi][t][o] V[xi][t][c], then one output
// transform. The sums over a chunk's tiles run in registers (sc_gw_pass: tiles as pixels),
// 16 x OC x C multiply-adds per 2x2 outputs against 36 x OC x C for the direct passes.
// grad_b is the sum of gy, taken in the same pass. Fixed image chunks (a function of the
// shape) own one M each, summed in order. cnn-a2 (N32 32->64 15x15): grad_w + grad_b ~2.0 ms
// (direct passes; ~2.6 ms as im2col + GEMM before them) -> ~1.6 ms, single thread.
void conv2d_wino_gw(const ConvShape& s, const float* gy, const float* x, float* gw, float* gb) {
  const int64_t C = s.C, OC = s.OC, TW = (s.OW + 1) / 2, TT = (s.OH + 1) / 2 * TW;
  auto tile = [&](int64_t n, int64_t tt, float* v, int64_t vs, float* u, int64_t us, const float* zero, float* B) {
    const int64_t th = tt / TW, tw = tt % TW;
    wino_in_tile(s, x, n, th, tw, zero, v, vs);  // x tile: V[xi][t][c] = (B^T d B)[i][j]
    // gy tile: U[xi][t][o] = (A g A^T)[i][j], A = [1 0; 1 1; 1 -1; 0 -1]
    const int64_t oh = 2 * th, ow = 2 * tw;
    const float* gn = gy + n * s.OH * s.OW * OC;
    const float* q[2][2];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        q[i][j] = (oh + i < s.OH && ow + j < s.OW) ? gn + ((oh + i) * s.OW + ow + j) * OC : zero;
    auto gy_tile = [&](auto ld, auto st, int64_t o) {
      const auto g00 = ld(q[0][0] + o), g01 = ld(q[0][1] + o), g10 = ld(q[1][0] + o), g11 = ld(q[1][1] + o);
      using T = decltype(g00);
      const T r[4][2] = {{g00, g01}, {g00 + g10, g01 + g11}, {g00 - g10, g01 - g11}, {-g10, -g11}};
      for (int i = 0; i < 4; ++i) {
        st(u + (i * 4 + 0) * us + o, r[i][0]);
        st(u + (i * 4 + 1) * us + o, r[i][0] + r[i][1]);
        st(u + (i * 4 + 2) * us + o, r[i][0] - r[i][1]);
        st(u + (i * 4 + 3) * us + o, -r[i][1]);
      }
      if (gb) st(B + o, ld(B + o) + ((g00 + g01) + (g10 + g11)));
    };
    int64_t o = 0;
    for (; o + VL <= OC; o += VL) gy_tile(ld_v, st_v, o);
    for (; o < OC; ++o) gy_tile(ld_s, st_s, o);
  };
  wino_gw_run<16>(s, TT, gw, gb, tile, [&](const float* macc, int64_t Cp) {
    // gw[o][c] = G^T M G, G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1]
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t c = 0; c < C; ++c) {
        float m[4][4], t[3][4];
        for (int xi = 0; xi < 16; ++xi) m[xi / 4][xi % 4] = macc[(xi * OC + o) * Cp + c];
        for (int j = 0; j < 4; ++j) {
          t[0][j] = m[0][j] + 0.5f * (m[1][j] + m[2][j]);
          t[1][j] = 0.5f * (m[1][j] - m[2][j]);
          t[2][j] = 0.5f * (m[1][j] + m[2][j]) + m[3][j];
        }
        float* d = gw + (o * C + c) * 9;
        for (int i = 0; i < 3; ++i) {
          d[i * 3 + 0] = t[i][0] + 0.5f * (t[i][1] + t[i][2]);
          d[i * 3 + 1] = 0.5f * (t[i][1] - t[i][2]);
          d[i * 3 + 2] = 0.5f * (t[i][1] + t[i][2]) + t[i][3];
        }
      }
  });
}

// grad_w of 1x3 stride-1 convs by Winograd F(3, 2) along W (the 1-D conv2d_wino_gw): per tile
// of 2 gy values and the 4 inputs under it, gw += G^T [ (A g) . (B^T d) ]; 4 products per 2
// outputs against 6. speech2 (N32 64->64 L63): grad_w + grad_b ~0.49 -> ~0.36 ms, 1 thread.
// Needs pt == 0: a tile reads row oh of x.
void conv2d_wino1d_gw(const ConvShape& s, const float* gy, const float* x, float* gw, float* gb) {
  const int64_t C = s.C, OC = s.OC, TW = (s.OW + 1) / 2, TT = s.OH * TW;
  auto tile = [&](int64_t n, int64_t tt, float* v, int64_t vs, float* u, int64_t us, const float* zero, float* B) {
    const int64_t oh = tt / TW, tw = tt % TW;
    const int64_t iw0 = 2 * tw - s.pl;
    const float* xr = oh < s.H ? x + (n * s.H + oh) * s.W * C : nullptr;  // pt == 0
    const float* p[4];
    for (int j = 0; j < 4; ++j) p[j] = (xr && iw0 + j >= 0 && iw0 + j < s.W) ? xr + (iw0 + j) * C : zero;
    wino1d_in(p, v, vs, C);
    // U[xi][t][o] = (A g)[xi], A = [1 0; 1 1; 1 -1; 0 -1]
    const float* gr = gy + ((n * s.OH + oh) * s.OW + 2 * tw) * OC;
    const float* q0 = gr;
    const float* q1 = 2 * tw + 1 < s.OW ? gr + OC : zero;
    auto gt = [&](auto ld, auto st, int64_t o) {
      const auto g0 = ld(q0 + o), g1 = ld(q1 + o);
      st(u + o, g0);
      st(u + us + o, g0 + g1);
      st(u + 2 * us + o, g0 - g1);
      st(u + 3 * us + o, -g1);
      if (gb) st(B + o, ld(B + o) + (g0 + g1));
    };
    int64_t o = 0;
    for (; o + VL <= OC; o += VL) gt(ld_v, st_v, o);
    for (; o < OC; ++o) gt(ld_s, st_s, o);
  };
  wino_gw_run<4>(s, TT, gw, gb, tile, [&](const float* macc, int64_t Cp) {
    // gw[o][c] = G^T m, G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1]
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t c = 0; c < C; ++c) {
        const float m0 = macc[(0 * OC + o) * Cp + c], m1 = macc[(1 * OC + o) * Cp + c], m2 = macc[(2 * OC + o) * Cp + c],
                    m3 = macc[(3 * OC + o) * Cp + c];
        float* d = gw + (o * C + c) * 3;
        d[0] = m0 + 0.5f * (m1 + m2);
        d[1] = 0.5f * (m1 - m2);
        d[2] = 0.5f * (m1 + m2) + m3;
      }
  });
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
