// conv_im2col.cpp: conv2d forward and backward as tiled im2col + SGEMM, compiled once per ISA:
// the algorithm for channels-first convs and for grouped (depthwise included) channels-last
// ones; conv_plan (conv.cpp) gives channels-last convs without groups to the direct and
// Winograd kernels, so here channels last always comes with G > 1.
//
// Work is cut into tiles of output positions (rows of the im2col matrix) small enough for
// the column tile to stay in L2; each tile is packed into a thread-local buffer and handed
// to sgemm_st inside our own parallel region, so no batch-sized buffer is ever built.
//   channels last : y[P, OC]  = col[P, KH*KW*Cg] @ Wr[KH*KW*Cg, OCg]   (rows of col contiguous)
//   channels first: y[OC, P]  = W[OCg, Cg*KH*KW] @ col[Cg*KH*KW, P]
// Bias and ReLU run in the GEMM epilogue. Backward per image: grad_w += col^T gy with an
// extra column of ones in col, so the same GEMM yields grad_b; grad_x = col2im(gy W^T).
// grad_w is accumulated in a fixed number of image chunks (set by N, not by the thread
// count) and reduced in order, so results do not depend on the thread count. GEMM N
// dimensions are padded to whole register tiles, or the GEMM is turned around when OC is small.
//
// Not here: the choice of algorithm (conv.cpp), validation (bindings/conv.cpp), float64.
// Tests: tests/test_conv.py (channels first and grouped cases against torch and the _naive
// kernels), tests/test_conv_algorithms.py.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/conv.h"
#include "cpu/conv_common.h"
#include "cpu/gemm.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

thread_local std::vector<float> t_gcol;

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

thread_local std::vector<float> t_col, t_out;

}  // namespace

void conv2d_forward_im2col(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                           float* y) {
  const int64_t Cg = s.C / s.G, OCg = s.OC / s.G, Kg = s.KH * s.KW * Cg, P = s.OH * s.OW;
  const int64_t T = tile_rows(Kg, P), tiles = (P + T - 1) / T;
  const int64_t OCp = padn(OCg);
  const bool narrow = s.cl && 2 * OCg <= OCp;
  std::vector<float> wr, bp, wmat;
  // W as [g][o][kk], kk = (kh*KW + kw)*Cg + c (col's column order)
  if (narrow) wmat = pack_weights(w, weight_pack(WLayout::kGOKC, s, Kg));
  if (s.cl) {
    wr = pack_weights(w, weight_pack(WLayout::kGKCO, s, OCp));  // Wr[g][kk][o], o padded to OCp
    if (b && OCp != OCg) bp = pack_weights(b, weight_pack(WLayout::kGKCO, s.G, OCg, 1, 1, OCp));
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

void conv2d_backward_im2col(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx,
                            float* gw, float* gb) {
  const int64_t Cg = s.C / s.G, OCg = s.OC / s.G, Kg = s.KH * s.KW * Cg, K1 = Kg + 1, P = s.OH * s.OW;
  const bool need_acc = gw || gb;
  const int64_t T = tile_rows(K1, P);
  // Fixed chunks of images (a function of N only) own one grad_w accumulator each.
  const int64_t chunks = std::min<int64_t>(s.N, 8), per = (s.N + chunks - 1) / chunks;
  const int64_t accsz = s.G * K1 * OCg;
  std::vector<float> acc(chunks * accsz, 0.f);
  const int64_t Kgp = padn(Kg);
  std::vector<float> wt;
  if (s.cl) wt = pack_weights(w, weight_pack(WLayout::kGOKC, s, Kgp));  // WrT[g][o][kk], kk padded to Kgp
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
  // Per group, K1 rows of OCg: grad_w's Kg rows in col's column order, then grad_b's.
  if (gw) {
    WeightPack p = weight_pack(s.cl ? WLayout::kGKCO : WLayout::kGCKO, s, OCg);
    p.sg = K1 * OCg;
    unpack_weights(acc.data(), p, gw);
  }
  if (gb)
    for (int64_t g = 0; g < s.G; ++g)
      for (int64_t o = 0; o < OCg; ++o) gb[g * OCg + o] = acc[(g * K1 + Kg) * OCg + o];
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
