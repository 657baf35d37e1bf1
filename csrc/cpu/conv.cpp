// conv.cpp: conv2d forward and backward as tiled im2col + SGEMM, compiled once per ISA.
//
// Work is cut into tiles of output positions (rows of the im2col matrix) small enough for
// the column tile to stay in L2; each tile is packed into a thread-local buffer and handed
// to sgemm_st inside our own parallel region, so no batch-sized buffer is ever built.
//   channels last : y[P, OC]  = col[P, KH*KW*Cg] @ Wr[KH*KW*Cg, OCg]   (rows of col contiguous)
//   channels first: y[OC, P]  = W[OCg, Cg*KH*KW] @ col[Cg*KH*KW, P]
// Bias and ReLU run in the GEMM epilogue. Backward per image: grad_w += col^T gy with an
// extra column of ones in col, so the same GEMM yields grad_b; grad_x = col2im(gy W^T).
// grad_w is accumulated in a fixed number of image chunks (set by N, not by the thread
// count) and reduced in order, so results do not depend on the thread count.
// Channels-last 3x3 stride-1 convs with C, OC >= 16 use Winograd F(2x2, 3x3) instead (forward,
// and grad_x as the full conv with the flipped kernel) and F(3x3, 2x2) for grad_w; 1x3
// (conv1d k3) stride-1 ones use F(2, 3) for the forward and grad_x and F(3, 2) for grad_w; other
// channels-last convs without groups use the direct kernels below (no im2col). GEMM N
// dimensions are padded to whole register tiles, or the GEMM is turned around when OC is small.
// The _naive kernels are plain loops in double: the oracle for tests.
//
// Not here: validation (bindings/conv.cpp), pooling (pool.cpp), float64.
// Tests: tests/test_conv.py.
#include "cpu/conv.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include <immintrin.h>

#include "common/parallel.h"
#include "common/simd.h"
#include "common/transpose.h"
#include "cpu/gemm.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {
namespace {

// Column tile budget: 128 K floats (512 KiB). On mid (K 576) 2^17 beat 2^16 by ~8% and
// tied 2^18, single thread.
constexpr int64_t kTileFloats = 1 << 17;

inline int64_t tile_rows(int64_t K, int64_t P) {
  int64_t t = kTileFloats / std::max<int64_t>(K, 1);
  t = std::max<int64_t>(32, t / 16 * 16);
  return std::min(t, P);
}

inline void copy_small(float* d, const float* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = s[i];
}

// Channels last: rows [r0, r1) of image n, group g -> col (ld floats per row, Kg used).
void im2col_cl(const ConvShape& s, const float* x, int64_t n, int64_t g, int64_t r0, int64_t r1, float* col,
               int64_t ld) {
  const int64_t Cg = s.C / s.G;
  const float* xn = x + n * s.H * s.W * s.C + g * Cg;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t oh = r / s.OW, ow = r % s.OW;
    float* d = col + (r - r0) * ld;
    const int64_t ih0 = oh * s.sh - s.pt, iw0 = ow * s.sw - s.pl;
    for (int64_t kh = 0; kh < s.KH; ++kh, d += s.KW * Cg) {
      const int64_t ih = ih0 + kh * s.dh;
      if (ih < 0 || ih >= s.H) {
        std::memset(d, 0, sizeof(float) * s.KW * Cg);
        continue;
      }
      const float* xr = xn + ih * s.W * s.C;
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        const int64_t iw = iw0 + kw * s.dw;
        if (iw < 0 || iw >= s.W)
          std::memset(d + kw * Cg, 0, sizeof(float) * Cg);
        else
          copy_small(d + kw * Cg, xr + iw * s.C, Cg);
      }
    }
  }
}

// Channels last: gx[n, ih, iw, g*Cg + c] += gcol[r, (kh*KW + kw)*Cg + c].
void col2im_cl(const ConvShape& s, const float* gcol, int64_t n, int64_t g, int64_t r0, int64_t r1, float* gx,
               int64_t ld) {
  const int64_t Cg = s.C / s.G;
  float* gn = gx + n * s.H * s.W * s.C + g * Cg;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t oh = r / s.OW, ow = r % s.OW;
    const float* d = gcol + (r - r0) * ld;
    const int64_t ih0 = oh * s.sh - s.pt, iw0 = ow * s.sw - s.pl;
    for (int64_t kh = 0; kh < s.KH; ++kh, d += s.KW * Cg) {
      const int64_t ih = ih0 + kh * s.dh;
      if (ih < 0 || ih >= s.H) continue;
      float* gr = gn + ih * s.W * s.C;
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        const int64_t iw = iw0 + kw * s.dw;
        if (iw < 0 || iw >= s.W) continue;
        float* o = gr + iw * s.C;
        const float* v = d + kw * Cg;
        for (int64_t c = 0; c < Cg; ++c) o[c] += v[c];
      }
    }
  }
}

// Channels first: positions [p0, p1) of image n, group g -> col[Kg][T] (T = p1 - p0).
void im2col_cf(const ConvShape& s, const float* x, int64_t n, int64_t g, int64_t p0, int64_t p1, float* col) {
  const int64_t Cg = s.C / s.G, T = p1 - p0;
  for (int64_t c = 0; c < Cg; ++c) {
    const float* xc = x + (n * s.C + g * Cg + c) * s.H * s.W;
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        float* d = col + ((c * s.KH + kh) * s.KW + kw) * T;
        int64_t p = p0;
        while (p < p1) {
          const int64_t oh = p / s.OW, ow = p % s.OW;
          const int64_t n_row = std::min(p1 - p, s.OW - ow);  // rest of this output row
          const int64_t ih = oh * s.sh - s.pt + kh * s.dh;
          float* dd = d + (p - p0);
          if (ih < 0 || ih >= s.H) {
            std::memset(dd, 0, sizeof(float) * n_row);
          } else {
            const float* xr = xc + ih * s.W;
            const int64_t off = kw * s.dw - s.pl;
            if (s.sw == 1) {
              // iw = ow + j + off; valid for j in [lo, hi)
              const int64_t lo = std::clamp<int64_t>(-(ow + off), 0, n_row);
              const int64_t hi = std::clamp<int64_t>(s.W - (ow + off), lo, n_row);
              for (int64_t j = 0; j < lo; ++j) dd[j] = 0.f;
              copy_small(dd + lo, xr + ow + lo + off, hi - lo);
              for (int64_t j = hi; j < n_row; ++j) dd[j] = 0.f;
            } else {
              for (int64_t j = 0; j < n_row; ++j) {
                const int64_t iw = (ow + j) * s.sw + off;
                dd[j] = (iw >= 0 && iw < s.W) ? xr[iw] : 0.f;
              }
            }
          }
          p += n_row;
        }
      }
  }
}

void col2im_cf(const ConvShape& s, const float* gcol, int64_t n, int64_t g, int64_t p0, int64_t p1, float* gx) {
  const int64_t Cg = s.C / s.G, T = p1 - p0;
  for (int64_t c = 0; c < Cg; ++c) {
    float* gc = gx + (n * s.C + g * Cg + c) * s.H * s.W;
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        const float* d = gcol + ((c * s.KH + kh) * s.KW + kw) * T;
        int64_t p = p0;
        while (p < p1) {
          const int64_t oh = p / s.OW, ow = p % s.OW;
          const int64_t n_row = std::min(p1 - p, s.OW - ow);
          const int64_t ih = oh * s.sh - s.pt + kh * s.dh;
          const float* dd = d + (p - p0);
          if (ih >= 0 && ih < s.H) {
            float* gr = gc + ih * s.W;
            const int64_t off = kw * s.dw - s.pl;
            for (int64_t j = 0; j < n_row; ++j) {
              const int64_t iw = (ow + j) * s.sw + off;
              if (iw >= 0 && iw < s.W) gr[iw] += dd[j];
            }
          }
          p += n_row;
        }
      }
  }
}

// The GEMM's column edge (N not a multiple of its NR = 2 vectors) is slow: (676x27)@(27x16)
// took 37 us against 14 us for N = 32, and (900x32)@(32x27) 70 us against 22 us. So GEMM
// N dimensions we own are padded to a multiple of 2*VL with zero weights.
inline int64_t padn(int64_t n) { return (n + 2 * VL - 1) / (2 * VL) * (2 * VL); }

// Channels-last weights: Wr[g][kk][o] (o padded to OCp with zeros), kk = (kh*KW + kw)*Cg + c.
std::vector<float> repack_cl(const ConvShape& s, const float* w, int64_t OCp) {
  const int64_t Cg = s.C / s.G, OCg = s.OC / s.G, KHW = s.KH * s.KW, Kg = KHW * Cg;
  std::vector<float> wr(s.G * Kg * OCp, 0.f);
  for (int64_t g = 0; g < s.G; ++g)
    for (int64_t o = 0; o < OCg; ++o)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t k = 0; k < KHW; ++k)
          wr[(g * Kg + k * Cg + c) * OCp + o] = w[((g * OCg + o) * Cg + c) * KHW + k];
  return wr;
}

// Transposed channels-last weights for grad_x: WrT[g][o][kk] (kk padded to Kgp with zeros).
std::vector<float> repack_cl_t(const ConvShape& s, const float* w, int64_t Kgp) {
  const int64_t Cg = s.C / s.G, OCg = s.OC / s.G, KHW = s.KH * s.KW;
  std::vector<float> wt(s.G * OCg * Kgp, 0.f);
  for (int64_t g = 0; g < s.G; ++g)
    for (int64_t o = 0; o < OCg; ++o)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t k = 0; k < KHW; ++k)
          wt[(g * OCg + o) * Kgp + k * Cg + c] = w[((g * OCg + o) * Cg + c) * KHW + k];
  return wt;
}

thread_local std::vector<float> t_col, t_gcol, t_out;

inline float* scratch(std::vector<float>& v, int64_t n) {
  if ((int64_t)v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

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

bool wino_ok(const ConvShape& s) {
  return s.cl && s.G == 1 && s.KH == 3 && s.KW == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 &&
         s.C >= 16 && s.OC >= 16 && s.OH * s.OW >= 16;
}

// U[xi][c][o] = (G g G^T)[i][j], xi = 4i + j, g = w[o, c] (3x3).
std::vector<float> wino_weights(const ConvShape& s, const float* w, int64_t OCp) {
  std::vector<float> u(16 * s.C * OCp, 0.f);
  for (int64_t o = 0; o < s.OC; ++o)
    for (int64_t c = 0; c < s.C; ++c) {
      const float* g = w + (o * s.C + c) * 9;
      float t[4][3];
      for (int j = 0; j < 3; ++j) {
        t[0][j] = g[j];
        t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
        t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
        t[3][j] = g[6 + j];
      }
      for (int i = 0; i < 4; ++i) {
        const float r[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]), 0.5f * (t[i][0] - t[i][1] + t[i][2]),
                            t[i][2]};
        for (int j = 0; j < 4; ++j) u[((i * 4 + j) * s.C + c) * OCp + o] = r[j];
      }
    }
  return u;
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

}  // namespace

// ---- direct ("implicit GEMM") kernels: channels last, no groups ----
// im2col + GEMM spends much of its time packing, and with K = KH*KW*C tiny (27 on cnn-a1 and
// tiny, 3 on speech1) in GEMM edges. These read x in place: the K inputs of output pixel p
// sit at fixed offsets off[k] from the pixel's corner in a zero-padded view of x (x itself
// when no padding is needed), k = (kh*KW + kw)*C + c.
//   forward : y[p, o]   = b[o] + sum_k x(p, k) Wr[k, o]   tile: kDM pixels x 1-2 vectors of o
//   grad_w  : gw[k, o]  = sum_p x(p, k) gy[p, o]          tile: kDK rows of k x 1-2 vectors of o,
//             held in registers over all pixels of an image chunk; grad_b rides along
//             (3x3 stride 1 with C, OC >= 16: Winograd F(3x3, 2x2) instead, conv2d_wino_gw)
//   grad_x  : stride 1 and C >= 16: the forward kernel (or Winograd) on the full conv of gy
//             with the flipped kernel; otherwise per image with output pixels in vector
//             lanes (gcol rows, then shifted adds into a channels-first padded gradient)
// grad_w is summed over a fixed number of image chunks (a function of N) in order, so the
// result does not depend on the thread count.
// cnn-a1 (N32 3->32 32x32), single thread: forward ~1.0 -> ~0.6 ms, backward ~3.4 -> ~1.5 ms.
namespace {

#if defined(__AVX512F__)
constexpr int kDM = 12, kDK = 12;  // 24 zmm accumulators
#else
constexpr int kDM = 6, kDK = 6;  // 12 ymm/xmm accumulators
#endif

bool direct_ok(const ConvShape& s) { return s.cl && s.G == 1; }

// Extent of the padded input along one axis that the conv reads.
inline int64_t extent(int64_t O, int64_t st, int64_t K, int64_t d) { return (O - 1) * st + (K - 1) * d + 1; }

// Geometry of the zero-padded view: Hp x Wp x C per image, rows rs floats apart. Padding is
// needed when the conv reads outside x (pt, pl > 0, or past the bottom/right edge).
struct PadGeom {
  int64_t Hp, Wp, rs, img;
  bool copy;
};

PadGeom pad_geom(const ConvShape& s) {
  PadGeom g;
  g.Hp = extent(s.OH, s.sh, s.KH, s.dh);
  g.Wp = extent(s.OW, s.sw, s.KW, s.dw);
  g.copy = s.pt > 0 || s.pl > 0 || g.Hp > s.H || g.Wp > s.W;
  if (!g.copy) {
    g.Hp = s.H;
    g.Wp = s.W;
  }
  g.rs = g.Wp * s.C;
  g.img = g.Hp * g.rs;
  return g;
}

// Image n of x into its padded view d (Hp x Wp x C, zero outside x).
void pad_image(const ConvShape& s, const PadGeom& g, const float* xn, float* d) {
  std::memset(d, 0, sizeof(float) * g.img);
  const int64_t h1 = std::min(s.H, g.Hp - s.pt), w1 = std::min(s.W, g.Wp - s.pl);
  for (int64_t h = 0; h < h1; ++h)
    std::memcpy(d + (h + s.pt) * g.rs + s.pl * s.C, xn + h * s.W * s.C, sizeof(float) * std::max<int64_t>(w1, 0) * s.C);
}

std::vector<int64_t> tap_offsets(const ConvShape& s, const PadGeom& g) {
  std::vector<int64_t> off(s.KH * s.KW * s.C);
  for (int64_t kh = 0; kh < s.KH; ++kh)
    for (int64_t kw = 0; kw < s.KW; ++kw)
      for (int64_t c = 0; c < s.C; ++c) off[(kh * s.KW + kw) * s.C + c] = kh * s.dh * g.rs + kw * s.dw * s.C + c;
  return off;
}

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

thread_local std::vector<float> t_pad, t_gpad, t_gyt, t_gct;

// Bias-only gradient over a chunk: out[0:OCp] = sum of gy rows (OCp wide).
void sc_bias_pass(const float* g, int64_t rows, int64_t ldg, int64_t OCp, float* out) {
  for (int64_t o = 0; o < OCp; o += VL) {
    vf acc = vf{};
    for (int64_t r = 0; r < rows; ++r) acc += loadu(g + r * ldg + o);
    storeu(out + o, acc);
  }
}

}  // namespace

namespace {
void conv2d_wino(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y) {
  const int64_t C = s.C, OC = s.OC, TH = (s.OH + 1) / 2, TW = (s.OW + 1) / 2, TT = TH * TW;
  // Tiles are numbered across the whole batch, so a block may span images (small images
  // like 13x13 -> 49 tiles would otherwise give short GEMMs).
  const int64_t kb = kWinoTiles;
  const int64_t blocks = (s.N * TT + kb - 1) / kb;
  const int64_t OCp = padn(OC);  // GEMM N padded (see padn)
  const std::vector<float> u = wino_weights(s, w, OCp);
  std::vector<int64_t> ident(C);
  for (int64_t c = 0; c < C; ++c) ident[c] = c;
  parallel_for(blocks, 1, [&](int64_t tb, int64_t te) {
    float* V = scratch(t_v, 16 * kb * C);
    float* M = scratch(t_m, 16 * kb * OCp);
    if ((int64_t)t_zero.size() < C) t_zero.assign(C, 0.f);
    const float* zero = t_zero.data();
    for (int64_t task = tb; task < te; ++task) {
      const int64_t g0 = task * kb, nt = std::min(kb, s.N * TT - g0);
      // input transform: V[xi][t][c] = (B^T d B)[i][j]
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t n = (g0 + t) / TT, th = (g0 + t) % TT / TW, tw = (g0 + t) % TW;
        const float* xn = x + n * s.H * s.W * C;
        const int64_t ih0 = 2 * th - s.pt, iw0 = 2 * tw - s.pl;
        const float* p[4][4];
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) {
            const int64_t ih = ih0 + i, iw = iw0 + j;
            p[i][j] = (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W) ? xn + (ih * s.W + iw) * C : zero;
          }
        float* v = V + t * C;
        const int64_t vs = kb * C;  // stride between the 16 V matrices
        int64_t c = 0;
        for (; c + VL <= C; c += VL) wino_in<vf>(p, v, vs, c, ld_v, st_v);
        for (; c < C; ++c) wino_in<float>(p, v, vs, c, ld_s, st_s);
      }
      // M[xi] = V[xi] U[xi] by the direct forward's register tiles (tiles as pixels, channels
      // as taps): no packing (sgemm_st packed A and B on every call). Single thread: cnn-a2
      // forward ~1.6 -> ~1.5 ms, its grad_x ~2.1 -> ~1.9 ms; mid forward ~48 -> ~41 ms.
      const int64_t ntt = (nt + kDM - 1) / kDM, mt = (nt + ntt - 1) / ntt;
      for (int xi = 0; xi < 16; ++xi)
        for (int64_t ob = 0; ob < OCp; ob += 2 * VL) {
          const int64_t nc = std::min<int64_t>(2 * VL, OCp - ob);
          const auto& tab = nc > VL ? kScFwd2 : kScFwd1;
          for (int64_t t0 = 0; t0 < nt; t0 += mt) {
            const int64_t m = std::min(mt, nt - t0);
            tab[m - 1](V + xi * kb * C + t0 * C, C, ident.data(), C, u.data() + xi * C * OCp + ob, OCp, nullptr,
                       false, M + xi * kb * OCp + t0 * OCp + ob, OCp, nc);
          }
        }
      // output transform: y = A^T m A (+ bias, relu)
      const int64_t ms = kb * OCp;
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t n = (g0 + t) / TT, th = (g0 + t) % TT / TW, tw = (g0 + t) % TW;
        const int64_t oh = 2 * th, ow = 2 * tw;
        const float* m = M + t * OCp;
        float* y00 = y + ((n * s.OH + oh) * s.OW + ow) * OC;
        const bool r1 = oh + 1 < s.OH, c1 = ow + 1 < s.OW;
        float* dst[4] = {y00, c1 ? y00 + OC : nullptr, r1 ? y00 + s.OW * OC : nullptr,
                         (r1 && c1) ? y00 + (s.OW + 1) * OC : nullptr};
        int64_t o = 0;
        for (; o + VL <= OC; o += VL) wino_out<vf>(m, ms, b, relu, o, dst, ld_v, st_v);
        for (; o < OC; ++o) wino_out<float>(m, ms, b, relu, o, dst, ld_s, st_s);
      }
    }
  });
}


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

// ---- Winograd F(2, 3) along W: 1x3 kernels, stride 1, channels last, no groups ----
// The 1-D version of conv2d_wino for the speech convs (conv1d k3 = conv2d 1x3): per tile of 2
// outputs, y = A^T [ (G g) . (B^T d) ], 4 products (C x OC each) instead of 6: 1.5x fewer
// multiply-adds. Used for C, OC >= 16. speech2 (N32 64->64 L63): forward ~0.47 -> ~0.37 ms,
// its grad_x (the same kind of conv) ~0.49 -> ~0.39 ms, single thread.
bool wino1d_ok(const ConvShape& s) {
  return s.cl && s.G == 1 && s.KH == 1 && s.KW == 3 && s.sh == 1 && s.sw == 1 && s.dw == 1 && s.C >= 16 &&
         s.OC >= 16 && s.OW >= 4;
}

void conv2d_wino1d(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y) {
  const int64_t C = s.C, OC = s.OC, TW = (s.OW + 1) / 2, NT = s.N * s.OH * TW;
  const int64_t kb = kWinoTiles, OCp = padn(OC);
  // U[xi][c][o] = (G g)[xi], g = w[o, c, 0, 0:3]
  std::vector<float> u(4 * C * OCp, 0.f), bp;
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t c = 0; c < C; ++c) {
      const float* g = w + (o * C + c) * 3;
      const float r[4] = {g[0], 0.5f * (g[0] + g[1] + g[2]), 0.5f * (g[0] - g[1] + g[2]), g[2]};
      for (int xi = 0; xi < 4; ++xi) u[(xi * C + c) * OCp + o] = r[xi];
    }
  if (b) {
    bp.assign(OCp, 0.f);
    std::memcpy(bp.data(), b, sizeof(float) * OC);
  }
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
    // x tile: V[xi][t][c] = (B^T d B)[i][j]
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
bool wino1d_gw_ok(const ConvShape& s) { return wino1d_ok(s) && s.pt == 0; }

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

}  // namespace

void conv2d_forward_direct(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y) {
  const int64_t C = s.C, OC = s.OC, KHW = s.KH * s.KW, K = KHW * C, OCp = (OC + VL - 1) / VL * VL;
  std::vector<float> wr(K * OCp, 0.f), bp;
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < KHW; ++k) wr[(k * C + c) * OCp + o] = w[(o * C + c) * KHW + k];
  if (b) {
    bp.assign(OCp, 0.f);
    std::memcpy(bp.data(), b, sizeof(float) * OC);
  }
  const PadGeom pg = pad_geom(s);
  std::vector<float> xpad;
  const float* xb = x;
  if (pg.copy) {
    xpad.resize(s.N * pg.img);
    parallel_for(s.N, 8, [&](int64_t nb, int64_t ne) {
      for (int64_t n = nb; n < ne; ++n) pad_image(s, pg, x + n * s.H * s.W * C, xpad.data() + n * pg.img);
    });
    xb = xpad.data();
  }
  const std::vector<int64_t> off = tap_offsets(s, pg);
  const int64_t ps = s.sw * C;
  // >= ~512 K multiply-adds per task: tiny (N1 3->16 28x28, 292 K, ~7 us) stays on the calling
  // thread rather than pay for waking the pool.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 19) / std::max<int64_t>(1, s.OW * K * OC));
  // Tiles of near-equal width (OW 26: 9+9+8 rather than 12+12+2, whose short tile is
  // FMA-latency bound).
  const int64_t ntw = (s.OW + kDM - 1) / kDM, mt = (s.OW + ntw - 1) / ntw;
  parallel_for(s.N * s.OH, grain, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n = r / s.OH, oh = r % s.OH;
      const float* xr = xb + n * pg.img + oh * s.sh * pg.rs;
      float* yr = y + r * s.OW * OC;
      for (int64_t ob = 0; ob < OC; ob += 2 * VL) {
        const int64_t nc = std::min<int64_t>(2 * VL, OC - ob);
        const auto& tab = nc > VL ? kScFwd2 : kScFwd1;
        for (int64_t ow = 0; ow < s.OW; ow += mt) {
          const int64_t m = std::min<int64_t>(mt, s.OW - ow);
          tab[m - 1](xr + ow * ps, ps, off.data(), K, wr.data() + ob, OCp, b ? bp.data() + ob : nullptr, relu,
                     yr + ow * OC + ob, OC, nc);
        }
      }
    }
  });
}

void conv2d_backward_direct(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx,
                             float* gw, float* gb) {
  const int64_t C = s.C, OC = s.OC, KHW = s.KH * s.KW, K = KHW * C, OCp = (OC + VL - 1) / VL * VL;
  const int64_t P = s.OH * s.OW;
  // Stride 1 with C >= 16: grad_x is the full conv of gy with the flipped, transposed kernel
  // (padding (K-1)*d - p), run by the Winograd or the direct forward kernel. speech2 (N32
  // 64->64 L63 k3): ~0.77 ms (gcol GEMM + col2im) -> ~0.4 ms, single thread.
  if (gx && s.sh == 1 && s.sw == 1 && C >= 16 && s.pt <= (s.KH - 1) * s.dh && s.pl <= (s.KW - 1) * s.dw) {
    ConvShape t = s;
    t.C = s.OC; t.OC = s.C; t.H = s.OH; t.W = s.OW; t.OH = s.H; t.OW = s.W;
    t.pt = (s.KH - 1) * s.dh - s.pt; t.pl = (s.KW - 1) * s.dw - s.pl;
    std::vector<float> wf(C * OC * KHW);
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < KHW; ++k) wf[(c * OC + o) * KHW + (KHW - 1 - k)] = w[(o * C + c) * KHW + k];
    const bool wino = s.KH == 3 && s.KW == 3 && s.dh == 1 && s.dw == 1 && s.OH + 2 - s.H - s.pt <= 2 &&
                      s.OW + 2 - s.W - s.pl <= 2 && wino_ok(t);
    if (wino)
      conv2d_wino(t, gy, wf.data(), nullptr, false, gx);
    else if (wino1d_ok(t))
      conv2d_wino1d(t, gy, wf.data(), nullptr, false, gx);
    else
      conv2d_forward_direct(t, gy, wf.data(), nullptr, false, gx);
    gx = nullptr;  // done
  }
  if (gw && wino_ok(s)) {
    conv2d_wino_gw(s, gy, x, gw, gb);
    gw = gb = nullptr;  // done
    if (!gx) return;
  }
  if (gw && wino1d_gw_ok(s)) {
    conv2d_wino1d_gw(s, gy, x, gw, gb);
    gw = gb = nullptr;  // done
    if (!gx) return;
  }
  const PadGeom pg = pad_geom(s);
  const std::vector<int64_t> off = tap_offsets(s, pg);
  const int64_t ps = s.sw * C;
  // grad_x per image: gyT (channels first, OWp wide) -> gcol rows gc[k][j] = sum_o wk[o][k] gyT[o][j]
  // -> summed into the channels-first padded gradient gt (C x Hp x RW) -> gx (channels last).
  // Rows of gt are RW floats (whole vectors, past the padded width); rows of gc LDC floats:
  // LP zeros on the left, so shifted reads stay inside, then RW.
  const int64_t OWp = (s.OW + VL - 1) / VL * VL, LP = (s.KW - 1) * s.dw;
  const int64_t RW = (OWp * s.sw + LP + VL - 1) / VL * VL, LDC = LP + RW;
  std::vector<float> wk;
  if (gx) {
    wk.resize(OC * K);
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < KHW; ++k) wk[o * K + k * C + c] = w[(o * C + c) * KHW + k];
  }
  // Fixed chunks of images (a function of N only) own one accumulator each: K rows of
  // grad_w and one of grad_b, OCp wide.
  const int64_t per = (s.N + 15) / 16, chunks = (s.N + per - 1) / per, accsz = (K + 1) * OCp;
  std::vector<float> acc((gw || gb) ? chunks * accsz : 0, 0.f);
  const int64_t np = (K + kDK - 1) / kDK, kb = (K + np - 1) / np;  // balanced passes over k
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t ch = cb; ch < ce; ++ch) {
      const int64_t n0 = ch * per, n1 = std::min(s.N, n0 + per), ni = n1 - n0;
      if (gx) {
        for (int64_t n = n0; n < n1; ++n) {
          // gyT[oh][o][0:OWp] (zero past OW), gt[c][Hp][RW] channels first, zeroed
          float* gyt = scratch(t_gyt, s.OH * OC * OWp);
          const float* gn = gy + n * P * OC;
          for (int64_t oh = 0; oh < s.OH; ++oh) {
            float* d = gyt + oh * OC * OWp;
            transpose(gn + oh * s.OW * OC, OC, s.OW, OC, d, OWp);
            for (int64_t o = 0; o < OC; ++o)
              for (int64_t ow = s.OW; ow < OWp; ++ow) d[o * OWp + ow] = 0.f;
          }
          float* gt = scratch(t_gpad, C * pg.Hp * RW);
          std::memset(gt, 0, sizeof(float) * C * pg.Hp * RW);
          // gcol of one output row, channels first: gc[k][LP + j], zero for j outside [0, OWp)
          float* gc = scratch(t_gct, K * LDC);
          std::memset(gc, 0, sizeof(float) * K * LDC);
          for (int64_t oh = 0; oh < s.OH; ++oh) {
            const float* gr = gyt + oh * OC * OWp;
            for (int64_t ob = 0; ob < OWp; ob += 2 * VL) {
              const bool two = OWp - ob > VL;
              for (int64_t k0 = 0; k0 < K; k0 += kb) {
                const int64_t nk = std::min(kb, K - k0);
                (two ? kScGx2 : kScGx1)[nk - 1](gr + ob, OWp, OC, wk.data() + k0, K, gc + k0 * LDC + LP + ob, LDC);
              }
            }
            // col2im: row (c, ih) of gt gets the KW taps of (kh, c), shifted by kw*dw. Summing
            // the shifted rows in registers keeps stores from overlapping (overlapping
            // read-modify-writes stall on store forwarding: 3x slower on cnn-a1).
            for (int64_t kh = 0; kh < s.KH; ++kh)
              for (int64_t c = 0; c < C; ++c) {
                float* dst = gt + (c * pg.Hp + oh * s.sh + kh * s.dh) * RW;
                const float* src = gc + (kh * s.KW * C + c) * LDC + LP;
                if (s.sw == 1) {
                  for (int64_t j = 0; j < RW; j += VL) {
                    vf v = loadu(dst + j);
                    for (int64_t kw = 0; kw < s.KW; ++kw) v += loadu(src + kw * C * LDC + j - kw * s.dw);
                    storeu(dst + j, v);
                  }
                } else {
                  for (int64_t kw = 0; kw < s.KW; ++kw) {
                    const float* sk = src + kw * C * LDC;
                    float* dk = dst + kw * s.dw;
                    for (int64_t j = 0; j < s.OW; ++j) dk[j * s.sw] += sk[j];
                  }
                }
              }
          }
          // back to channels last, dropping the padding
          float* gxn = gx + n * s.H * s.W * C;
          const int64_t w1 = std::max<int64_t>(0, std::min(s.W, RW - s.pl));
          for (int64_t h = 0; h < s.H; ++h) {
            float* o = gxn + h * s.W * C;
            if (h + s.pt >= pg.Hp) {
              std::memset(o, 0, sizeof(float) * s.W * C);
              continue;
            }
            for (int64_t c = 0; c < C; ++c) {
              const float* src = gt + (c * pg.Hp + h + s.pt) * RW + s.pl;
              for (int64_t w_ = 0; w_ < w1; ++w_) o[w_ * C + c] = src[w_];
              for (int64_t w_ = w1; w_ < s.W; ++w_) o[w_ * C + c] = 0.f;
            }
          }
        }
      }
      if (!gw && !gb) continue;
      // gy of the chunk, OCp wide (copied with zero columns when OC is not whole vectors)
      const float* g = gy + n0 * P * OC;
      int64_t ldg = OC;
      if (OCp != OC) {
        float* gpd = scratch(t_gcol, ni * P * OCp);
        for (int64_t r = 0; r < ni * P; ++r) {
          std::memcpy(gpd + r * OCp, g + r * OC, sizeof(float) * OC);
          std::memset(gpd + r * OCp + OC, 0, sizeof(float) * (OCp - OC));
        }
        g = gpd;
        ldg = OCp;
      }
      float* A = acc.data() + ch * accsz;
      if (!gw) {
        sc_bias_pass(g, ni * P, ldg, OCp, A + K * OCp);
        continue;
      }
      const float* xs = x + n0 * s.H * s.W * C;
      if (pg.copy) {
        float* xp = scratch(t_pad, ni * pg.img);
        for (int64_t n = 0; n < ni; ++n) pad_image(s, pg, xs + n * s.H * s.W * C, xp + n * pg.img);
        xs = xp;
      }
      for (int64_t ob = 0; ob < OCp; ob += 2 * VL) {
        const bool two = OCp - ob > VL;
        GwLoop a{xs, pg.img, s.sh * pg.rs, ps, s.OH, s.OW, ni, g + ob, ldg};
        for (int64_t k0 = 0; k0 < K; k0 += kb) {
          const int64_t nk = std::min(kb, K - k0);
          const bool withb = gb && k0 == 0;
          const auto& tab = two ? (withb ? kScGw2b : kScGw2) : (withb ? kScGw1b : kScGw1);
          tab[nk - 1](a, off.data() + k0, A + k0 * OCp + ob, OCp, A + K * OCp + ob);
        }
      }
    }
  });
  if (!gw && !gb) return;
  // sum the chunks in order, split over the pool by element ranges (speech2: 16 x 193 x 64)
  parallel_for_static(accsz, VL, [&](int64_t b, int64_t e) {
    for (int64_t ch = 1; ch < chunks; ++ch) {
      const float* src = acc.data() + ch * accsz;
      for (int64_t i = b; i < e; ++i) acc[i] += src[i];
    }
  });
  if (gw)
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < KHW; ++k) gw[(o * C + c) * KHW + k] = acc[(k * C + c) * OCp + o];
  if (gb)
    for (int64_t o = 0; o < OC; ++o) gb[o] = acc[K * OCp + o];
}

void conv2d_forward(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y) {
  const int64_t Cg = s.C / s.G, OCg = s.OC / s.G, Kg = s.KH * s.KW * Cg, P = s.OH * s.OW;
  if (wino_ok(s)) {
    conv2d_wino(s, x, w, b, relu, y);
    return;
  }
  if (wino1d_ok(s)) {
    conv2d_wino1d(s, x, w, b, relu, y);
    return;
  }
  if (direct_ok(s)) {
    conv2d_forward_direct(s, x, w, b, relu, y);
    return;
  }
  const int64_t T = tile_rows(Kg, P), tiles = (P + T - 1) / T;
  const int64_t OCp = padn(OCg);
  const bool narrow = s.cl && 2 * OCg <= OCp;
  std::vector<float> wr, bp, wmat;
  if (narrow) {  // W as [g][o][kk], kk = (kh*KW + kw)*Cg + c (col's column order)
    wmat.resize(s.G * OCg * Kg);
    const int64_t KHW = s.KH * s.KW;
    for (int64_t oc = 0; oc < s.OC; ++oc)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t k = 0; k < KHW; ++k) wmat[oc * Kg + k * Cg + c] = w[(oc * Cg + c) * KHW + k];
  }
  if (s.cl) {
    wr = repack_cl(s, w, OCp);
    if (b && OCp != OCg) {
      bp.assign(s.G * OCp, 0.f);
      for (int64_t g = 0; g < s.G; ++g) std::memcpy(&bp[g * OCp], b + g * OCg, sizeof(float) * OCg);
    }
  }
  parallel_for(s.N * tiles, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t n = t / tiles, r0 = (t % tiles) * T, r1 = std::min(P, r0 + T);
      for (int64_t g = 0; g < s.G; ++g) {
        GemmArgs a;
        if (s.cl) {
          float* col = scratch(t_col, T * Kg);
          im2col_cl(s, x, n, g, r0, r1, col, Kg);
          const float* A = col;
          a.M = r1 - r0; a.N = OCg; a.K = Kg;
          a.A = A; a.rsa = Kg; a.csa = 1;
          a.N = OCp;
          a.B = wr.data() + g * Kg * OCp; a.rsb = OCp; a.csb = 1;
          if (narrow) {
            // Few output channels (padding would at least double N): compute y^T tile
            // [OCg][m] = W [OCg][Kg] @ col^T, then transpose into y. tiny (N1 3->16 28x28):
            // C call ~32 -> ~27 us single thread.
            const int64_t m = r1 - r0;
            float* ct = scratch(t_out, T * OCg);
            GemmArgs t;
            t.M = OCg; t.N = m; t.K = Kg;
            t.A = wmat.data() + g * OCg * Kg; t.rsa = Kg; t.csa = 1;
            t.B = A; t.rsb = 1; t.csb = Kg;
            t.C = ct; t.ldc = m;
            t.bias_m = b ? b + g * OCg : nullptr;
            t.relu = relu;
            sgemm_st(t);
            float* yt = y + (n * P + r0) * s.OC + g * OCg;
            for (int64_t r = 0; r < m; ++r)
              for (int64_t o = 0; o < OCg; ++o) yt[r * s.OC + o] = ct[o * m + r];
            continue;
          }
          if (OCp == OCg) {
            a.C = y + (n * P + r0) * s.OC + g * OCg; a.ldc = s.OC;
            a.bias_n = b ? b + g * OCg : nullptr;
          } else {  // padded columns go to a scratch tile, copied out below
            a.C = scratch(t_out, T * OCp); a.ldc = OCp;
            a.bias_n = b ? bp.data() + g * OCp : nullptr;
          }
        } else {
          float* col = scratch(t_col, T * Kg);
          im2col_cf(s, x, n, g, r0, r1, col);
          a.M = OCg; a.N = r1 - r0; a.K = Kg;
          a.A = w + g * OCg * Kg; a.rsa = Kg; a.csa = 1;
          a.B = col; a.rsb = r1 - r0; a.csb = 1;
          a.C = y + (n * s.OC + g * OCg) * P + r0; a.ldc = P;
          a.bias_m = b ? b + g * OCg : nullptr;
        }
        a.beta = 0.f;
        a.relu = relu;
        sgemm_st(a);
        if (s.cl && OCp != OCg)
          for (int64_t r = 0; r < r1 - r0; ++r)
            std::memcpy(y + (n * P + r0 + r) * s.OC + g * OCg, a.C + r * OCp, sizeof(float) * OCg);
      }
    }
  });
}

void conv2d_backward(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx, float* gw,
                     float* gb) {
  if (direct_ok(s)) {
    conv2d_backward_direct(s, gy, x, w, gx, gw, gb);
    return;
  }
  const int64_t Cg = s.C / s.G, OCg = s.OC / s.G, Kg = s.KH * s.KW * Cg, K1 = Kg + 1, P = s.OH * s.OW;
  const bool need_acc = gw || gb;
  const int64_t T = tile_rows(K1, P);
  // Fixed chunks of images (a function of N only) own one grad_w accumulator each.
  const int64_t chunks = std::min<int64_t>(s.N, 8), per = (s.N + chunks - 1) / chunks;
  const int64_t accsz = s.G * K1 * OCg;
  std::vector<float> acc(chunks * accsz, 0.f);
  const int64_t Kgp = padn(Kg);
  std::vector<float> wt;
  if (s.cl) wt = repack_cl_t(s, w, Kgp);
  if (gx) std::memset(gx, 0, sizeof(float) * s.N * s.C * s.H * s.W);
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t ch = cb; ch < ce; ++ch) {
      float* A = acc.data() + ch * accsz;
      for (int64_t n = ch * per; n < std::min(s.N, (ch + 1) * per); ++n)
        for (int64_t r0 = 0; r0 < P; r0 += T) {
          const int64_t r1 = std::min(P, r0 + T), m = r1 - r0;
          float* col = scratch(t_col, T * K1);
          float* gcol = scratch(t_gcol, T * std::max(K1, Kgp));
          for (int64_t g = 0; g < s.G; ++g) {
            float* ag = A + g * K1 * OCg;
            GemmArgs a, d;
            if (s.cl) {
              im2col_cl(s, x, n, g, r0, r1, col, K1);
              for (int64_t r = 0; r < m; ++r) col[r * K1 + Kg] = 1.f;
              const float* gyt = gy + (n * P + r0) * s.OC + g * OCg;
              // acc[K1][OCg] += col^T gy
              a.M = K1; a.N = OCg; a.K = m;
              a.A = col; a.rsa = 1; a.csa = K1;
              a.B = gyt; a.rsb = s.OC; a.csb = 1;
              a.C = ag; a.ldc = OCg;
              // gcol[m][Kgp] = gy WrT (columns past Kg are zero weights)
              d.M = m; d.N = Kgp; d.K = OCg;
              d.A = gyt; d.rsa = s.OC; d.csa = 1;
              d.B = wt.data() + g * OCg * Kgp; d.rsb = Kgp; d.csb = 1;
              d.C = gcol; d.ldc = Kgp;
            } else {
              im2col_cf(s, x, n, g, r0, r1, col);
              for (int64_t r = 0; r < m; ++r) col[Kg * m + r] = 1.f;
              const float* gyt = gy + (n * s.OC + g * OCg) * P + r0;
              // acc[K1][OCg] += col gy^T
              a.M = K1; a.N = OCg; a.K = m;
              a.A = col; a.rsa = m; a.csa = 1;
              a.B = gyt; a.rsb = 1; a.csb = P;
              a.C = ag; a.ldc = OCg;
              // gcol[Kg][m] = W^T gy
              d.M = Kg; d.N = m; d.K = OCg;
              d.A = w + g * OCg * Kg; d.rsa = 1; d.csa = Kg;
              d.B = gyt; d.rsb = P; d.csb = 1;
              d.C = gcol; d.ldc = m;
            }
            a.beta = 1.f;
            d.beta = 0.f;
            if (need_acc) sgemm_st(a);
            if (!gx) continue;
            sgemm_st(d);
            if (s.cl)
              col2im_cl(s, gcol, n, g, r0, r1, gx, Kgp);
            else
              col2im_cf(s, gcol, n, g, r0, r1, gx);
          }
        }
    }
  });
  if (!need_acc) return;
  for (int64_t ch = 1; ch < chunks; ++ch) {
    const float* src = acc.data() + ch * accsz;
    for (int64_t i = 0; i < accsz; ++i) acc[i] += src[i];
  }
  const int64_t KHW = s.KH * s.KW;
  for (int64_t g = 0; g < s.G; ++g) {
    const float* ag = acc.data() + g * K1 * OCg;
    for (int64_t o = 0; o < OCg; ++o) {
      const int64_t oc = g * OCg + o;
      if (gw && s.cl) {
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t k = 0; k < KHW; ++k) gw[(oc * Cg + c) * KHW + k] = ag[(k * Cg + c) * OCg + o];
      } else if (gw) {
        for (int64_t k = 0; k < Kg; ++k) gw[oc * Kg + k] = ag[k * OCg + o];
      }
      if (gb) gb[oc] = ag[Kg * OCg + o];
    }
  }
}

// ---- naive oracles: direct loops in double ----
namespace {
inline int64_t xi(const ConvShape& s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return s.cl ? ((n * s.H + h) * s.W + w) * s.C + c : ((n * s.C + c) * s.H + h) * s.W + w;
}
inline int64_t yi(const ConvShape& s, int64_t n, int64_t o, int64_t h, int64_t w) {
  return s.cl ? ((n * s.OH + h) * s.OW + w) * s.OC + o : ((n * s.OC + o) * s.OH + h) * s.OW + w;
}
}  // namespace

void conv2d_forward_naive(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y) {
  const int64_t Cg = s.C / s.G, OCg = s.OC / s.G;
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.OC; ++o)
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          double acc = b ? b[o] : 0.0;
          const int64_t g = o / OCg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t kh = 0; kh < s.KH; ++kh)
              for (int64_t kw = 0; kw < s.KW; ++kw) {
                const int64_t ih = oh * s.sh - s.pt + kh * s.dh, iw = ow * s.sw - s.pl + kw * s.dw;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                acc += (double)x[xi(s, n, g * Cg + c, ih, iw)] * w[((o * Cg + c) * s.KH + kh) * s.KW + kw];
              }
          if (relu && acc < 0) acc = 0;
          y[yi(s, n, o, oh, ow)] = (float)acc;
        }
}

void conv2d_backward_naive(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx, float* gw,
                           float* gb) {
  const int64_t Cg = s.C / s.G, OCg = s.OC / s.G;
  std::vector<double> dx(s.N * s.C * s.H * s.W, 0.0), dw(s.OC * Cg * s.KH * s.KW, 0.0), db(s.OC, 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t o = 0; o < s.OC; ++o)
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const double gv = gy[yi(s, n, o, oh, ow)];
          db[o] += gv;
          const int64_t g = o / OCg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t kh = 0; kh < s.KH; ++kh)
              for (int64_t kw = 0; kw < s.KW; ++kw) {
                const int64_t ih = oh * s.sh - s.pt + kh * s.dh, iw = ow * s.sw - s.pl + kw * s.dw;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                const int64_t xk = xi(s, n, g * Cg + c, ih, iw), wk = ((o * Cg + c) * s.KH + kh) * s.KW + kw;
                dx[xk] += gv * w[wk];
                dw[wk] += gv * x[xk];
              }
        }
  if (gx)
    for (size_t i = 0; i < dx.size(); ++i) gx[i] = (float)dx[i];
  if (gw)
    for (size_t i = 0; i < dw.size(); ++i) gw[i] = (float)dw[i];
  if (gb)
    for (int64_t o = 0; o < s.OC; ++o) gb[o] = (float)db[o];
}

const ConvKernels& conv_kernels() {
  static const ConvKernels k{&conv2d_forward, &conv2d_forward_naive, &conv2d_backward, &conv2d_backward_naive};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
