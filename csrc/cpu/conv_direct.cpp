// conv_direct.cpp: the direct ("implicit GEMM") conv2d kernels for channels last without
// groups, compiled once per ISA. conv_plan (conv.cpp) sends them the forward and the
// gradients that Winograd (conv_winograd.cpp) does not take.
//
// im2col + GEMM spends much of its time packing, and with K = KH*KW*C tiny (27 on cnn-a1 and
// tiny, 3 on speech1) in GEMM edges. These read x in place: the K inputs of output pixel p
// sit at fixed offsets off[k] from the pixel's corner in a zero-padded view of x (x itself
// when no padding is needed), k = (kh*KW + kw)*C + c.
//   forward : y[p, o]   = b[o] + sum_k x(p, k) Wr[k, o]   tile: kDM pixels x 1-2 vectors of o
//   grad_w  : gw[k, o]  = sum_p x(p, k) gy[p, o]          tile: kDK rows of k x 1-2 vectors of o,
//             held in registers over all pixels of an image chunk; grad_b rides along
//   grad_x  : per image with output pixels in vector lanes (gcol rows, then shifted adds
//             into a channels-first padded gradient). At stride 1 with C >= 16, conv.cpp
//             runs grad_x as the forward conv of gy with the flipped kernel instead.
// grad_w is summed over a fixed number of image chunks (a function of N) in order, so the
// result does not depend on the thread count.
// cnn-a1 (N32 3->32 32x32), single thread: forward ~1.0 -> ~0.6 ms, backward ~3.4 -> ~1.5 ms.
//
// Not here: the register tiles (conv_tiles.h), the choice of algorithm (conv.cpp), groups and
// channels first (conv_im2col.cpp), validation (bindings/conv.cpp).
// Tests: tests/test_conv_direct.py (against torch and the _naive kernels, thread-count
// independence), tests/test_conv_algorithms.py.
#include <algorithm>
#include <cstring>
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
namespace {

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
  g.copy = s.pt != 0 || s.pl != 0 || g.Hp > s.H || g.Wp > s.W;
  if (!g.copy) {
    g.Hp = s.H;
    g.Wp = s.W;
  }
  g.rs = g.Wp * s.C;
  g.img = g.Hp * g.rs;
  return g;
}

// Image n of x into its padded view d (Hp x Wp x C, zero outside x; a negative pt or pl
// crops x's first rows or columns).
void pad_image(const ConvShape& s, const PadGeom& g, const float* xn, float* d) {
  std::memset(d, 0, sizeof(float) * g.img);
  const int64_t h0 = std::max<int64_t>(0, -s.pt), h1 = std::min(s.H, g.Hp - s.pt);
  const int64_t w0 = std::max<int64_t>(0, -s.pl), w1 = std::min(s.W, g.Wp - s.pl);
  if (w1 <= w0) return;
  for (int64_t h = h0; h < h1; ++h)
    std::memcpy(d + (h + s.pt) * g.rs + (w0 + s.pl) * s.C, xn + (h * s.W + w0) * s.C, sizeof(float) * (w1 - w0) * s.C);
}

// x itself, or (when the conv reads outside it) its zero-padded copy in `buf`, images in parallel.
const float* padded_input(const ConvShape& s, const PadGeom& g, const float* x, std::vector<float>& buf) {
  if (!g.copy) return x;
  buf.resize(s.N * g.img);
  parallel_for(s.N, 1, [&](int64_t nb, int64_t ne) {
    for (int64_t n = nb; n < ne; ++n) pad_image(s, g, x + n * s.H * s.W * s.C, buf.data() + n * g.img);
  });
  return buf.data();
}

std::vector<int64_t> tap_offsets(const ConvShape& s, const PadGeom& g) {
  std::vector<int64_t> off(s.KH * s.KW * s.C);
  for (int64_t kh = 0; kh < s.KH; ++kh)
    for (int64_t kw = 0; kw < s.KW; ++kw)
      for (int64_t c = 0; c < s.C; ++c) off[(kh * s.KW + kw) * s.C + c] = kh * s.dh * g.rs + kw * s.dw * s.C + c;
  return off;
}

thread_local std::vector<float> t_pad, t_gpad, t_gyt, t_gct;

// Bias-only gradient over a chunk: out[0:OCp] = sum of gy rows (OCp wide).
void sc_bias_pass(const float* g, int64_t rows, int64_t ldg, int64_t OCp, float* out) {
  for (int64_t o = 0; o < OCp; o += VL) {
    vf acc = vf{};
    for (int64_t r = 0; r < rows; ++r) acc += loadu(g + r * ldg + o);
    storeu(out + o, acc);
  }
}

// The direct forward's weight layout for OCo output channels over K = T * Ci rows (tap
// major, then input channel): blocks of 2 VL output channels (the tiles' width), block ob at
// dst + ob K, [k][o - ob] with rows bw = min(2 VL, OCp - ob) floats, entry val(o, ci, t).
// Written a group of 8 output channels at a time (of 4 where a VL-4 build's last block is 4
// wide): for conv weights the group's 8 rows of w are read along (8 lines live, within L1's
// ways even when the rows lie a power of two apart, as w's rows of 1x1 kernels over 256 or 512
// channels do) and the block's rows written 8 floats at a time; in w's order the stores fell
// 32 KB apart (3x3 256 -> 512: a quarter of the call in the copy). Blocks in parallel past
// 256 KB (smaller ones on the calling thread: the mission CNN at batch 1 does not wake the
// pool for them); every element written (the lanes past OCo as zeros), so no fill first.
template <class Val>
void pack_blocked(int64_t OCo, int64_t Ci, int64_t T, Val&& val, float* dst) {
  const int64_t BW = 2 * VL, OCp = (OCo + VL - 1) / VL * VL, K = T * Ci, nob = (OCo + BW - 1) / BW;
  parallel_for(nob, K * OCp * int64_t(sizeof(float)) > (int64_t(256) << 10) ? 1 : nob, [&](int64_t jb, int64_t je) {
    for (int64_t j = jb; j < je; ++j) {
      const int64_t ob = j * BW, bw = std::min(BW, OCp - ob), no = std::min(BW, OCo - ob);
      for (int64_t og = 0; og < bw; og += 8) {
        const int64_t gw = std::min<int64_t>(8, bw - og), ng = std::max<int64_t>(0, std::min(gw, no - og));
        for (int64_t t = 0; t < T; ++t) {
          float* d = dst + ob * K + t * Ci * bw + og;
          for (int64_t ci = 0; ci < Ci; ++ci, d += bw) {
            for (int64_t oi = 0; oi < ng; ++oi) d[oi] = val(ob + og + oi, ci, t);
            for (int64_t oi = ng; oi < gw; ++oi) d[oi] = 0.f;
          }
        }
      }
    }
  });
}

}  // namespace

void conv2d_forward_direct(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y,
                           const OutView* view, const float* packed) {
  const int64_t C = s.C, OC = s.OC, KHW = s.KH * s.KW, K = KHW * C, OCp = (OC + VL - 1) / VL * VL;
  const OutView yv = view ? *view : OutView{s.OH * s.OW * OC, s.OW * OC, OC};
  // Weights in pack_blocked's layout (`packed`, when given, is that already).
  const int64_t BW = 2 * VL, nob = (OC + BW - 1) / BW;
  std::unique_ptr<float[]> wr_own(packed ? nullptr : new float[static_cast<size_t>(K * OCp)]);
  if (!packed)  // OIHW: w[o][c][k]
    pack_blocked(OC, C, KHW, [&](int64_t o, int64_t c, int64_t k) { return w[(o * C + c) * KHW + k]; }, wr_own.get());
  std::vector<float> bp;
  if (b) bp = pack_weights(b, weight_pack(WLayout::kGKCO, 1, OC, 1, 1, OCp));
  const PadGeom pg = pad_geom(s);
  std::vector<float> xpad;
  const float* xb = padded_input(s, pg, x, xpad);
  const std::vector<int64_t> off = tap_offsets(s, pg);
  const int64_t ps = s.sw * C;
  // Tiles of near-equal width (OW 26: 9+9+8 rather than 12+12+2, whose short tile is
  // FMA-latency bound).
  const int64_t ntw = (s.OW + kDM - 1) / kDM, mt = (s.OW + ntw - 1) / ntw;
  const int64_t rows = s.N * s.OH;
  // Output rows r0 .. r1 for the block of output channels at ob.
  auto rows_block = [&](int64_t r0, int64_t r1, int64_t ob) {
    const int64_t nc = std::min<int64_t>(BW, OC - ob), bw = std::min(BW, OCp - ob);
    const float* wb = (packed ? packed : wr_own.get()) + ob * K;
    const float* bb = b ? bp.data() + ob : nullptr;
    const auto& tab = nc > VL ? kScFwd2 : kScFwd1;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / s.OH, oh = r % s.OH;
      const float* xr = xb + n * pg.img + oh * s.sh * pg.rs;
      float* yr = y + n * yv.img + oh * yv.row;
      for (int64_t ow = 0; ow < s.OW; ow += mt) {
        const int64_t m = std::min<int64_t>(mt, s.OW - ow);
        tab[m - 1](xr + ow * ps, ps, off.data(), K, wb, bw, bb, relu, yr + ow * yv.px + ob, yv.px, nc);
      }
    }
  };
  if (K * OCp * int64_t(sizeof(float)) > (int64_t(512) << 10)) {
    // Weights past half of L2 (3x3 128 -> 256 and wider: 1.2-4.7 MB): tasks of one block
    // over a chunk of rows, so the block (K 2VL floats, 295 KB at 3x3x256) stays in L2
    // across the rows instead of all of W streaming from L3 for every row: ResNet-18's
    // 3x3 256 -> 512 stride 2 at N8 14x14 (7-pixel rows) read 4.7 MB per 7-pixel row.
    // Enough row chunks for ~4 tasks a thread; every output element is computed by one
    // tile call whatever the chunks, so results do not depend on them.
    const int64_t want = 4 * static_cast<int64_t>(get_num_threads());
    const int64_t rchunks = std::min(rows, std::max<int64_t>(1, (want + nob - 1) / nob));
    const int64_t rper = (rows + rchunks - 1) / rchunks;
    parallel_for(rchunks * nob, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        const int64_t r0 = (t / nob) * rper;
        rows_block(r0, std::min(rows, r0 + rper), (t % nob) * BW);
      }
    });
    return;
  }
  // >= ~512 K multiply-adds per task: tiny (N1 3->16 28x28, 292 K, ~7 us) stays on the calling
  // thread rather than pay for waking the pool.
  int64_t grain = std::max<int64_t>(1, (int64_t(1) << 19) / std::max<int64_t>(1, s.OW * K * OC));
  // Rows in near-equal chunks: the mission CNN's first conv at batch 1 (30 rows, grain 20)
  // split 20 + 10, one thread doing two thirds of the work (N1 3->32 32x32, 2 threads:
  // ~14 -> ~10 us). The chunks depend on the shape alone, as before.
  const int64_t tasks = (rows + grain - 1) / grain;
  grain = (rows + tasks - 1) / tasks;
  parallel_for(rows, grain, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r)
      for (int64_t ob = 0; ob < OC; ob += BW) rows_block(r, r + 1, ob);
  });
}

// grad_x of a strided conv by output phase. With stride s, gx rows h = s a + ph take the
// kernel rows kh = kh0 + s m (kh0 = (ph + pt) mod s) only, each from gy row a + q - m (q =
// (ph + pt - kh0) / s): a stride-1 conv of gy with that sub-kernel flipped (Mh = the number
// of such kh rows; top padding Mh - 1 - q), and the same along the width. Each phase is
// one direct forward (OC -> C channels) written into gx through a strided view; together
// the phases do exactly the conv's multiply-adds. A phase with no kernel rows or columns
// (a 1x1 kernel at stride 2) is zero. The per-image path of conv2d_backward_direct puts
// output pixels in vector lanes, which a 7-pixel row fills less than half of (ResNet-18's
// 3x3 256 -> 512 stride 2 at N8: grad_x 13 ms at 2 threads against 4.9 ms for the forward).
void conv2d_gx_phases(const ConvShape& s, const float* gy, const float* w, float* gx) {
  const int64_t KHW = s.KH * s.KW;
  bool empty = false;
  for (int64_t ph = 0; ph < s.sh; ++ph)
    for (int64_t pw = 0; pw < s.sw; ++pw) {
      const int64_t kh0 = (ph + s.pt) % s.sh, kw0 = (pw + s.pl) % s.sw;
      empty |= kh0 >= s.KH || kw0 >= s.KW;
    }
  if (empty) std::memset(gx, 0, sizeof(float) * s.N * s.H * s.W * s.C);
  for (int64_t ph = 0; ph < std::min(s.sh, s.H); ++ph)
    for (int64_t pw = 0; pw < std::min(s.sw, s.W); ++pw) {
      const int64_t kh0 = (ph + s.pt) % s.sh, kw0 = (pw + s.pl) % s.sw;
      if (kh0 >= s.KH || kw0 >= s.KW) continue;
      const int64_t Mh = (s.KH - kh0 + s.sh - 1) / s.sh, Mw = (s.KW - kw0 + s.sw - 1) / s.sw;
      const int64_t qh = (ph + s.pt - kh0) / s.sh, qw = (pw + s.pl - kw0) / s.sw;
      ConvShape t{};
      t.N = s.N, t.C = s.OC, t.H = s.OH, t.W = s.OW, t.OC = s.C, t.KH = Mh, t.KW = Mw;
      t.OH = (s.H - ph + s.sh - 1) / s.sh, t.OW = (s.W - pw + s.sw - 1) / s.sw;
      t.sh = t.sw = t.dh = t.dw = t.G = 1;
      t.pt = Mh - 1 - qh, t.pl = Mw - 1 - qw;
      t.cl = true;
      // The phase conv's weights straight in the forward's layout (pack_blocked): its output
      // channel c (x's), input channel o (gy's), tap j Mw + i = w[o][c][kh0 + s (Mh - 1 - j)]
      // [kw0 + s (Mw - 1 - i)]; a group's 8 values are a run of w's row o, KH KW floats apart.
      std::vector<int64_t> kk(static_cast<size_t>(Mh * Mw));
      for (int64_t j = 0; j < Mh; ++j)
        for (int64_t i = 0; i < Mw; ++i) kk[j * Mw + i] = (kh0 + s.sh * (Mh - 1 - j)) * s.KW + kw0 + s.sw * (Mw - 1 - i);
      std::unique_ptr<float[]> v(new float[static_cast<size_t>(Mh * Mw * s.OC * ((s.C + VL - 1) / VL * VL))]);
      pack_blocked(s.C, s.OC, Mh * Mw, [&](int64_t c, int64_t o, int64_t t) { return w[(o * s.C + c) * KHW + kk[t]]; },
                   v.get());
      const OutView view{s.H * s.W * s.C, s.sh * s.W * s.C, s.sw * s.C};
      conv2d_forward_direct(t, gy, nullptr, nullptr, false, gx + (ph * s.W + pw) * s.C, &view, v.get());
    }
}

void conv2d_backward_direct(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx,
                            float* gw, float* gb) {
  const int64_t C = s.C, OC = s.OC, KHW = s.KH * s.KW, K = KHW * C, OCp = (OC + VL - 1) / VL * VL;
  const int64_t P = s.OH * s.OW;
  const PadGeom pg = pad_geom(s);
  const std::vector<int64_t> off = tap_offsets(s, pg);
  const int64_t ps = s.sw * C;
  // grad_x per image: gyT (channels first, OWp wide) -> gcol rows gc[k][j] = sum_o wk[o][k] gyT[o][j]
  // -> summed into the channels-first padded gradient gt (C x Hp x RW) -> gx (channels last).
  // Rows of gt are RW floats (whole vectors, past the padded width); rows of gc LDC floats:
  // LP zeros on the left, so shifted reads stay inside, then RW.
  const int64_t OWp = (s.OW + VL - 1) / VL * VL, LP = (s.KW - 1) * s.dw;
  const int64_t RW = (OWp * s.sw + LP + VL - 1) / VL * VL, LDC = LP + RW;
  std::vector<float> wk;  // wk[o][k]
  if (gx) wk = pack_weights(w, weight_pack(WLayout::kGOKC, s, K));
  // Fixed chunks of images (a function of N only) own one accumulator each: K rows of
  // grad_w and one of grad_b, OCp wide.
  const int64_t per = (s.N + 15) / 16, img_chunks = (s.N + per - 1) / per, accsz = (K + 1) * OCp;
  // Wide grad_w (large K x OC, few pixels: ResNet-18's last stage, 7x7, 512 -> 512, K = 4608):
  // one accumulator, every pixel of the batch summed by the task that owns a block of it,
  // tasks split over (k, o) blocks. Per-chunk partial sums were 8 x 9.4 MB at N8, written,
  // then re-read to add them up (N8 7x7 512->512 grad_w 27 ms vs torch 11 ms).
  const bool wide = gw && img_chunks > 1 && img_chunks * accsz * int64_t(sizeof(float)) > (int64_t(8) << 20);
  const int64_t chunks = wide ? 1 : img_chunks;  // accumulators
  std::vector<float> acc((gw || gb) ? chunks * accsz : 0, 0.f);
  const int64_t np = (K + kDK - 1) / kDK, kb = (K + np - 1) / np;  // balanced passes over k
  if (wide) {
    // grad_x (if asked) per image by the chunk loop below, grad_w and grad_b here
    const float* g = gy;
    int64_t ldg = OC;
    std::vector<float> gpd, xpd;
    if (OCp != OC) {
      gpd.resize(s.N * P * OCp);
      parallel_for(s.N * P, 256, [&](int64_t rb, int64_t re) {
        for (int64_t r = rb; r < re; ++r) {
          std::memcpy(gpd.data() + r * OCp, gy + r * OC, sizeof(float) * OC);
          std::memset(gpd.data() + r * OCp + OC, 0, sizeof(float) * (OCp - OC));
        }
      });
      g = gpd.data();
      ldg = OCp;
    }
    const float* xs = padded_input(s, pg, x, xpd);
    const int64_t nob = (OCp + 2 * VL - 1) / (2 * VL);
    float* A = acc.data();
    parallel_for(nob * np, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        const int64_t ob = (t % nob) * 2 * VL, k0 = (t / nob) * kb, nk = std::min(kb, K - k0);
        const bool two = OCp - ob > VL, withb = gb && k0 == 0;
        GwLoop a{xs, pg.img, s.sh * pg.rs, ps, s.OH, s.OW, s.N, g + ob, ldg};
        const auto& tab = two ? (withb ? kScGw2b : kScGw2) : (withb ? kScGw1b : kScGw1);
        tab[nk - 1](a, off.data() + k0, A + k0 * OCp + ob, OCp, A + K * OCp + ob);
      }
    });
  }
  parallel_for(img_chunks, 1, [&](int64_t cb, int64_t ce) {
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
      if ((!gw && !gb) || wide) continue;
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
  if (gw) unpack_weights(acc.data(), weight_pack(WLayout::kGKCO, s, OCp), gw);
  if (gb)
    for (int64_t o = 0; o < OC; ++o) gb[o] = acc[K * OCp + o];
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
