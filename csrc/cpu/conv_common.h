// conv_common.h: what the conv family's files share, per ISA: the entry points of each
// algorithm (called by the drivers in conv.cpp, which pick one per shape and output), the
// one weight repack of the fast kernels, the scratch buffers and the GEMM N padding.
//   conv_im2col.cpp   im2col / col2im tiles + SGEMM: channels first, and grouped channels last
//   conv_direct.cpp   register-tiled direct kernels: channels last without groups
//   conv_winograd.cpp Winograd F(2x2, 3x3) and F(2, 3), forward and grad_w
//   conv_depthwise.cpp direct depthwise kernels (groups == C), both layouts
//   conv_planar.cpp   channels-first forward for few input channels (an RGB first layer)
//   conv_naive.cpp    plain loops in double: the oracle
// Every entry point overwrites its outputs; a null gradient pointer is not computed.
//
// Not here: the public shapes and kernel table (conv.h), the choice of algorithm (conv.cpp),
// the register tiles of the direct and Winograd kernels (conv_tiles.h).
// Include only from csrc/cpu/ files (they are compiled with PYAIML_ISA_NS defined).
// Tests: tests/test_conv.py, tests/test_conv_direct.py, tests/test_conv_algorithms.py.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/simd.h"
#include "cpu/conv.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

// Internal to the conv family: hidden, so not exported from the module, and calls between
// its files are direct (no PLT), as they were within one file.
#pragma GCC visibility push(hidden)

// conv_im2col.cpp: any layout and groups.
void conv2d_forward_im2col(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y);
void conv2d_backward_im2col(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx,
                            float* gw, float* gb);

// conv_direct.cpp: channels last, G = 1. The backward computes grad_x with output pixels in
// vector lanes, grad_w and grad_b by passes that hold a block of grad_w in registers.
// The forward writes y[n][oh][ow][o] at y + n img + oh row + ow px + o: by default the
// contiguous (N, OH, OW, OC) array, or a strided view of a larger one (the phases of a
// strided conv's grad_x). Padding may be negative (the input cropped). `packed`, when given,
// holds the weights already in the kernel's blocked layout (conv_direct.cpp) and w is unused.
struct OutView {
  int64_t img, row, px;
};
void conv2d_forward_direct(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y,
                           const OutView* view = nullptr, const float* packed = nullptr);
void conv2d_backward_direct(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx,
                            float* gw, float* gb);
// grad_x of a strided conv (channels last, G = 1, dilation 1) as one direct forward conv per
// output phase (see conv_direct.cpp).
void conv2d_gx_phases(const ConvShape& s, const float* gy, const float* w, float* gx);

// conv_planar.cpp: channels first, G = 1, C <= 4, stride 1 or 2, dilation 1, kernels up to
// 7x7, rows of at least a vector: the forward only (the backward goes through channels last).
bool planar_ok(const ConvShape& s);
void conv2d_forward_planar(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y);

// conv_pointwise.cpp: 1x1, stride 1, no padding, channels last, G = 1: the forward, and
// grad_w (gw: OC x C, overwritten). x_finite, when given: whether x has no NaN or inf, each
// pixel tile's rows scanned before the tile is computed.
bool pointwise_ok(const ConvShape& s);
void conv2d_forward_pointwise(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                              float* y, bool* x_finite = nullptr);
void conv2d_gw_pointwise(const ConvShape& s, const float* gy, const float* x, float* gw);

// conv_winograd.cpp: channels last, G = 1, stride 1, dilation 1; 3x3 kernels (conv2d_wino,
// conv2d_wino_gw) or 1x3 (conv2d_wino1d, and conv2d_wino1d_gw with pt == 0). The _gw kernels
// also write grad_b when gb is not null.
void conv2d_wino(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y);
void conv2d_wino1d(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y);
void conv2d_wino_gw(const ConvShape& s, const float* gy, const float* x, float* gw, float* gb);
void conv2d_wino1d_gw(const ConvShape& s, const float* gy, const float* x, float* gw, float* gb);

// conv_depthwise.cpp: groups == C > 1 (OC = m * C), both layouts, any kernel, stride, dilation.
bool depthwise_ok(const ConvShape& s);
// x_finite, when given, is set to whether x has no NaN or inf (channels first: each input
// plane after its copy into the kernel's buffer; channels last: each task's input rows as it
// reaches them, which it scans whether asked or not).
void conv2d_forward_depthwise(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                              float* y, bool* x_finite = nullptr);
void conv2d_backward_depthwise(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx,
                               float* gw, float* gb);
// Channels first, one output channel per input channel, kernel widths 3/5/7 at stride 1/2
// (k3 on rows of at most 14), maps of at most 4096 pixels: the forward runs on channels-last
// tiles of each image's channel blocks (conv2d_forward_depthwise), not on transposed copies of
// the whole x and y.
bool depthwise_nchw_tiles_ok(const ConvShape& s);
// conv_depthwise.cpp: grouped channels-last convs with C/G == OC/G in {2, 4, 8} dividing VL
// and C a multiple of VL (ResNeXt-style small groups), forward and backward.
bool grouped_small_ok(const ConvShape& s);
void conv2d_forward_grouped_small(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                                  float* y);
void conv2d_backward_grouped_small(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx,
                                   float* gw, float* gb);
// Channels first, the shapes grouped_small_ok takes in channels last with OC == C, maps of at
// most 4096 pixels: the forward on channels-last tiles of each image's channel blocks. x_finite:
// as conv2d_forward_depthwise's.
bool grouped_nchw_tiles_ok(const ConvShape& s);
void conv2d_forward_grouped_nchw_tiles(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                                       float* y, bool* x_finite = nullptr);

// conv_naive.cpp: direct loops in double, every layout and shape.
void conv2d_forward_naive(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y);
void conv2d_backward_naive(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx, float* gw,
                           float* gb);

// ---- weight repacking ----
// w is OIHW, (OC, Cg, KH, KW) with OC = G * OCg, read as (G, OCg, Cg, KHW): tap k = kh*KW + kw.
// The kernels read it in one of these layouts; ld is the padded length of the innermost axis
// (zeros past the real elements):
enum class WLayout {
  kGKCO,  // [g][k][c][o], o padded to ld: W of col[P, kk] @ W[kk, o] with kk = k*Cg + c
          // (channels-last im2col, direct forward, Winograd U with transform points as taps)
  kGOKC,  // [g][o][k][c], kk padded to ld: W^T of gy @ W^T (grad_x gcol) and W @ col^T
  kGCKO,  // [g][c][k][o], o padded to ld: rows in channels-first col order (im2col grad_w)
  kCOKf,  // [c][o][KHW - 1 - k], G = 1, ld unused: the kernel of grad_x as a forward conv
};

// Where w[g*OCg + o][c][k] sits in the packed array (at) and its length (size).
struct WeightPack {
  int64_t G, OCg, Cg, KHW;
  int64_t sg, so, sc, sk;  // strides of group, output channel, input channel, tap
  bool flip;               // tap k at KHW - 1 - k
  int64_t size;
  int64_t at(int64_t g, int64_t o, int64_t c, int64_t k) const {
    return g * sg + o * so + c * sc + (flip ? KHW - 1 - k : k) * sk;
  }
};

inline WeightPack weight_pack(WLayout layout, int64_t G, int64_t OCg, int64_t Cg, int64_t KHW, int64_t ld) {
  WeightPack p{G, OCg, Cg, KHW, 0, 0, 0, 0, false, 0};
  switch (layout) {
    case WLayout::kGKCO: p.sk = Cg * ld; p.sc = ld; p.so = 1; p.sg = KHW * Cg * ld; break;
    case WLayout::kGOKC: p.so = ld; p.sk = Cg; p.sc = 1; p.sg = OCg * ld; break;
    case WLayout::kGCKO: p.sc = KHW * ld; p.sk = ld; p.so = 1; p.sg = Cg * KHW * ld; break;
    case WLayout::kCOKf: p.sc = OCg * KHW; p.so = KHW; p.sk = 1; p.sg = Cg * OCg * KHW; p.flip = true; break;
  }
  p.size = G * p.sg;
  return p;
}

// The layout of a conv's weights; a bias is the weight (OC, 1, 1, 1): weight_pack(l, G, OCg, 1, 1, ld).
inline WeightPack weight_pack(WLayout layout, const ConvShape& s, int64_t ld) {
  return weight_pack(layout, s.G, s.OC / s.G, s.C / s.G, s.KH * s.KW, ld);
}

// f(i, j) for every weight: i its index in w (OIHW), j its place in the packed array. Where
// the packed layout holds output channels contiguously (kGKCO, kGCKO), output channels run
// innermost in blocks of 64: the packed side is then written (or read) in runs and w's side
// touches 64 rows at a time; in w's own order each o put its K values ld floats apart over
// the whole array (3x3 256 -> 512, 4.7 MB: ~2 ms a copy, cache misses on every element).
template <class F>
inline void for_each_weight(const WeightPack& p, F&& f) {
  for (int64_t g = 0; g < p.G; ++g) {
    if (p.so != 1) {
      for (int64_t o = 0; o < p.OCg; ++o)
        for (int64_t c = 0; c < p.Cg; ++c)
          for (int64_t k = 0; k < p.KHW; ++k) f(((g * p.OCg + o) * p.Cg + c) * p.KHW + k, p.at(g, o, c, k));
      continue;
    }
    for (int64_t ob = 0; ob < p.OCg; ob += 64) {
      const int64_t oe = std::min<int64_t>(p.OCg, ob + 64);
      for (int64_t c = 0; c < p.Cg; ++c)
        for (int64_t k = 0; k < p.KHW; ++k) {
          const int64_t j0 = p.at(g, ob, c, k), i0 = ((g * p.OCg + ob) * p.Cg + c) * p.KHW + k, si = p.Cg * p.KHW;
          for (int64_t o = 0; o < oe - ob; ++o) f(i0 + o * si, j0 + o);
        }
    }
  }
}

// w (OIHW) -> a zero-padded packed copy.
inline std::vector<float> pack_weights(const float* w, const WeightPack& p) {
  std::vector<float> d(p.size, 0.f);
  for_each_weight(p, [&](int64_t i, int64_t j) { d[j] = w[i]; });
  return d;
}

// The inverse: a packed grad_w back into w's OIHW layout (padding dropped).
inline void unpack_weights(const float* d, const WeightPack& p, float* w) {
  for_each_weight(p, [&](int64_t i, int64_t j) { w[i] = d[j]; });
}

// Outputs written with non-temporal stores (simd.h stream) once this many bytes: a pointwise
// conv's output alone, a depthwise conv's input and output together. Past the last-level
// cache (32 MB here) the output's lines are evicted before a later read either way, so
// reading each for ownership first only adds traffic (N32 C96 56x56 depthwise 3x3, channels
// last: stride 1 about 4.3 -> 3.4 ms, stride 2 2.2-2.8 -> 1.7 ms).
constexpr int64_t kStreamBytes = int64_t(32) << 20;

// A thread's scratch buffer, grown to at least n floats (contents undefined).
inline float* scratch(std::vector<float>& v, int64_t n) {
  if ((int64_t)v.size() < n) v.resize(n);
  return v.data();
}

// The im2col backward's gcol tile; the direct grad_w reuses it for gy padded to whole vectors,
// so a thread keeps one such buffer for both (defined in conv_im2col.cpp).
extern thread_local std::vector<float> t_gcol;

// The GEMM's column edge (N not a multiple of its NR = 2 vectors) is slow: (676x27)@(27x16)
// took 37 us against 14 us for N = 32, and (900x32)@(32x27) 70 us against 22 us. So GEMM
// N dimensions we own are padded to a multiple of 2*VL with zero weights.
inline int64_t padn(int64_t n) { return (n + 2 * VL - 1) / (2 * VL) * (2 * VL); }

#pragma GCC visibility pop

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
