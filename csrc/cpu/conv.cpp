// conv.cpp: conv2d forward and backward for the kernel table (conv.h), compiled once per ISA.
// conv_plan is the one place that decides which algorithm computes the output, grad_x,
// grad_w and grad_b of a shape, and why; conv2d_forward and conv2d_backward follow it.
// The algorithms (entry points in conv_common.h):
//   conv_im2col.cpp   im2col / col2im tiles + SGEMM: channels first, and grouped channels last
//   conv_direct.cpp   register-tiled direct kernels: channels last without groups
//   conv_winograd.cpp Winograd F(2x2, 3x3) and F(2, 3), forward and grad_w
//   conv_depthwise.cpp direct depthwise kernels (groups == C, OC = m * C), both layouts
//   conv_pointwise.cpp 1x1 stride-1 channels last: forward, grad_x as a forward conv, grad_w (C > OC)
//   conv_planar.cpp   channels-first forward for C <= 4 (forward_any, before conv_plan)
//   conv_naive.cpp    plain loops in double: the oracle (conv2d_*_naive)
// Each sums in an order set by the shape alone, so no result depends on the thread count.
//
// Not here: validation (bindings/conv.cpp), pooling (pool.cpp), float64 (NumPy reference).
// Tests: tests/test_conv_depthwise.py (depthwise and 1x1 rows against torch and _naive, every
// ISA), tests/test_conv_algorithms.py (shapes on every row of conv_plan against the _naive
// kernels), tests/test_conv.py, tests/test_conv_direct.py; each ISA with PYAIML_ISA.
#include <memory>
#include <vector>

#include "common/parallel.h"
#include "common/transpose.h"
#include "cpu/conv.h"
#include "cpu/conv_common.h"
#include "cpu/finite.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {
namespace {

enum class ConvAlgo {
  kIm2col,  // conv_im2col.cpp
  kDirect,  // conv_direct.cpp
  kWino,    // conv_winograd.cpp: F(2x2, 3x3); grad_w F(3x3, 2x2)
  kWino1d,  // conv_winograd.cpp: F(2, 3) along W; grad_w F(3, 2)
  kDepthwise,  // conv_depthwise.cpp: every result
  kGrouped,    // conv_depthwise.cpp: forward of small groups, channels last
  kPointwise,  // conv_pointwise.cpp: 1x1, stride 1, no padding, channels last: forward, grad_x, grad_w
};

// The algorithm behind each result of one shape.
struct ConvPlan {
  ConvAlgo fwd;
  ConvAlgo gx;
  bool gx_as_conv;  // grad_x is the forward conv grad_x_conv(s) of gy, run by gx's forward kernel
  ConvAlgo gw;      // grad_w, and grad_b in the same pass
  ConvAlgo gb;      // grad_b when grad_w is not asked for
  bool gx_phases;   // grad_x by conv2d_gx_phases (strided convs; false where not set)
};

bool wino_ok(const ConvShape& s) {
  return s.cl && s.G == 1 && s.KH == 3 && s.KW == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 &&
         s.C >= 16 && s.OC >= 16 && s.OH * s.OW >= 16;
}

bool wino1d_ok(const ConvShape& s) {
  return s.cl && s.G == 1 && s.KH == 1 && s.KW == 3 && s.sh == 1 && s.sw == 1 && s.dw == 1 && s.C >= 16 &&
         s.OC >= 16 && s.OW >= 4;
}

// grad_x as a forward conv: gy (OH x OW, OC channels) with the flipped kernel, C and OC
// swapped, and padding (K-1)*d - p gives x (H x W, C channels).
ConvShape grad_x_conv(const ConvShape& s) {
  ConvShape t = s;
  t.C = s.OC; t.OC = s.C; t.H = s.OH; t.W = s.OW; t.OH = s.H; t.OW = s.W;
  t.pt = (s.KH - 1) * s.dh - s.pt; t.pl = (s.KW - 1) * s.dw - s.pl;
  return t;
}

// Rows are tried in order; the first that holds wins. Timings: single thread.
ConvPlan conv_plan(const ConvShape& s) {
  using A = ConvAlgo;
  // Depthwise (groups == C > 1), either layout: per-channel direct kernels. im2col + GEMM ran
  // these as C GEMMs of one row each: N32 C96 56x56 k3 NHWC 227 ms against 21 ms for torch
  // (Zen 3 AVX2, 2 threads). Now (quiet 2-core Zen 4, 2 threads, AVX-512) 4.6 ms for the
  // kernel vs torch channels_last 4.9 ms, fwd+bwd through pyaiml.ops 18.8 vs 17.5 ms; k5 N32
  // C240 14x14 fwd+bwd 4.8 vs 13.1 ms (benchmarks/RESULTS.md, "Depthwise and pointwise
  // convolution").
  if (depthwise_ok(s)) return {A::kDepthwise, A::kDepthwise, false, A::kDepthwise, A::kDepthwise};
  // Pointwise channels last: y = x W^T and grad_x = gy W by the pointwise kernel on the arrays
  // as they are (x is a (N*H*W, C) matrix); grad_w as below; grad_b by the direct kernel's row sums.
  // Both ISAs, N32 56x56, 2 threads (Zen 4; AVX2 by PYAIML_ISA=avx2 on it), alternating builds:
  // the SGEMMs on the arrays that AVX2 used (forward, grad_x, grad_w) ran 96->24 at 5.2 / 3.4 /
  // 6.9 ms and 24->144 at 5.0 / 8.7 / 14.1 ms (grad_w: K = N*H*W, two threads on a 144 x 24
  // product); pointwise / pointwise / direct 2.8 / 3.0 / 6.6 and 4.4 / 4.6 / 8.5 ms. AVX-512
  // forward and grad_x (the direct kernel before): 96->24 5.4 / 5.2 -> 3.8 / 3.3 ms, 24->144
  // 8.1 / 8.9 -> 5.4 / 6.1 ms. grad_w with C > OC by the pointwise kernel, C in vector lanes
  // (96->24: AVX-512 4.4-4.9 -> 3.7 ms, AVX2 6.6 -> 5.5); not with C < OC, where the direct
  // kernel's OC lanes fill and its sums stay in registers longer (24->144: direct 4.8-5.2 /
  // 8.5 ms, pointwise 9.1 / 10.2).
  if (pointwise_ok(s))
    return {A::kPointwise, A::kPointwise, true, s.C > s.OC ? A::kPointwise : A::kDirect, A::kDirect};
  // Channels first or groups: the direct and Winograd kernels are written for channels last
  // without groups. im2col computes every result (grad_b: col's extra column of ones).
  // Channels last, groups of 2, 4 or 8 channels in and out: a direct forward that shuffles
  // each x vector into its groups' lanes (im2col ran one GEMM per group of 4 columns: N8 C128
  // G32 28x28 k3 NHWC ~12 ms vs ~1.7 ms for torch channels_last, 1 thread); the backward the
  // same way (grad_w and grad_b by chunk partial sums).
  if (grouped_small_ok(s)) return {A::kGrouped, A::kGrouped, false, A::kGrouped, A::kGrouped};
  if (!s.cl || s.G != 1) return {A::kIm2col, A::kIm2col, false, A::kIm2col, A::kIm2col};
  ConvPlan p{};

  if (wino_ok(s))
    p.fwd = A::kWino;  // 3x3 stride 1, C, OC >= 16: 2.25x fewer multiply-adds (mid 82 -> ~55 ms)
  else if (wino1d_ok(s))
    p.fwd = A::kWino1d;  // 1x3 stride 1, C, OC >= 16: 1.5x fewer (speech2 ~0.47 -> ~0.37 ms)
  else
    p.fwd = A::kDirect;  // no im2col packing, no GEMM edges at small K (cnn-a1 ~1.0 -> ~0.6 ms)

  // Stride 1, C >= 16 and p <= (K-1)*d (grad_x_conv's top/left padding >= 0): the forward
  // kernels on the full conv of gy (speech2 k3: gcol GEMM + col2im ~0.77 -> ~0.4 ms).
  p.gx_as_conv = s.sh == 1 && s.sw == 1 && s.C >= 16 && s.pt <= (s.KH - 1) * s.dh && s.pl <= (s.KW - 1) * s.dw;
  const ConvShape t = grad_x_conv(s);
  // Strided, dilation 1, C >= 16 (the phase convs' output channels fill the vectors): one
  // direct forward per output phase (conv_direct.cpp). ResNet-18's 3x3 256 -> 512 stride 2,
  // N8 14x14, channels last, 2 threads: grad_x 13.1 -> 6.6 ms (benchmarks/RESULTS.md,
  // "ResNet-18's stride-2 and last-stage layers").
  p.gx_phases = !p.gx_as_conv && (s.sh > 1 || s.sw > 1) && s.dh == 1 && s.dw == 1 && s.C >= 16;
  if (!p.gx_as_conv)
    p.gx = A::kDirect;  // per image, output pixels in vector lanes, shifted adds into gx
  else if (wino_ok(t) && s.OH + 2 - s.H - s.pt <= 2 && s.OW + 2 - s.W - s.pl <= 2)
    p.gx = A::kWino;  // as the forward; the bottom/right padding (OH + 2 - H - pt) must be <= 2 too
  else if (wino1d_ok(t))
    p.gx = A::kWino1d;  // as the forward (speech2's grad_x ~0.49 -> ~0.39 ms)
  else
    p.gx = A::kDirect;  // the direct forward kernel on t

  // Maps of at most 64 pixels keep the direct kernel (its wide mode, conv_direct.cpp): N8 7x7
  // 512 -> 512 grad_w 28-31 ms by Winograd, 22.5 by the direct kernel (torch 10.5-12.9).
  if (wino_ok(s) && s.OH * s.OW > 64)
    p.gw = A::kWino;  // F(3x3, 2x2): 16 vs 36 multiply-adds per 2x2 outputs (cnn-a2 ~2.0 -> ~1.6 ms)
  else if (wino1d_ok(s) && s.pt == 0)
    p.gw = A::kWino1d;  // F(3, 2) (speech2 ~0.49 -> ~0.36 ms); a tile reads row oh of x: no top padding
  else
    p.gw = A::kDirect;  // blocks of grad_w held in registers over image chunks

  p.gb = A::kDirect;  // alone: one pass summing gy's rows
  return p;
}

// The forward kernel of algorithm a.
void forward_by(ConvAlgo a, const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                float* y) {
  switch (a) {
    case ConvAlgo::kIm2col: conv2d_forward_im2col(s, x, w, b, relu, y); break;
    case ConvAlgo::kDirect: conv2d_forward_direct(s, x, w, b, relu, y); break;
    case ConvAlgo::kWino: conv2d_wino(s, x, w, b, relu, y); break;
    case ConvAlgo::kWino1d: conv2d_wino1d(s, x, w, b, relu, y); break;
    case ConvAlgo::kDepthwise: conv2d_forward_depthwise(s, x, w, b, relu, y); break;
    case ConvAlgo::kPointwise: conv2d_forward_pointwise(s, x, w, b, relu, y); break;
    case ConvAlgo::kGrouped: conv2d_forward_grouped_small(s, x, w, b, relu, y); break;
  }
}

ConvShape as_cl(const ConvShape& s) {
  ConvShape t = s;
  t.cl = true;
  return t;
}

// Channels first without groups, kernels larger than 1x1 (and depthwise, rows narrower than a
// vector: below): the channels-last plan on transposed copies (x, gy in; y, gx out; weights and grad_w share one layout). im2col +
// SGEMM ran these at 2-3.5x the time (the mission CNN's layers, N32, 2 threads: 3 -> 32 at
// 32x32 forward ~1.06 -> ~0.58 ms, backward ~2.3 -> ~0.9 ms; 32 -> 64 at 15x15 forward ~2.9 ->
// ~0.83 ms, backward ~5.8 -> ~1.9 ms), the copies included. 1x1 convs stay on im2col, which
// is then one GEMM on x as it is.
bool nchw_via_cl(const ConvShape& s) {
  // Depthwise on output rows narrower than a vector too: the channels-first kernels put the row
  // in vector lanes (7 of 16 used at 7x7); the channels-last ones the channels. MobileNetV3-
  // Small's layers, N8, 2 threads, ms forward / backward before -> after: C576 7x7 k5 1.22 / 3.05
  // -> 0.18 / 0.82, C240 14x14 k5 0.63 / 1.48 -> 0.26 / 0.98, C288 14x14 k5 s2 0.61 / 1.50 ->
  // 0.19 / 0.50 (torch 0.21-0.28 forward). Wider rows stay (56x56 k3 measured no gain). The
  // forward of the shapes depthwise_nchw_tiles_ok takes runs on tiles instead (forward_any).
  if (!s.cl && depthwise_ok(s)) return s.OW < VL;
  // Small groups (2, 4 or 8 channels): the channels-last grouped kernels rather than im2col (the
  // forward of most such shapes runs on tiles instead, forward_any). N32 C128 G32 28x28 k3,
  // forward + backward through pyaiml.ops: im2col 31-35 ms (torch 24-27).
  if (!s.cl && grouped_small_ok(as_cl(s))) return true;
  return !s.cl && s.G == 1 && s.KH * s.KW > 1;
}

// a (N, R, P) -> (N, P, R) per image, split over the pool by images.
void transpose_images(const float* a, int64_t N, int64_t R, int64_t P, float* out) {
  parallel_for(N, 1, [&](int64_t nb, int64_t ne) {
    for (int64_t n = nb; n < ne; ++n) transpose(a + n * R * P, P, R, P, out + n * R * P, R);
  });
}

// The forward of a shape that nchw_via_cl does not send to transposed copies; with
// x_finite, x's NaN/inf check too (inside the depthwise and pointwise kernels, else a scan
// first, the convolution skipped when it fails).
void forward_planned(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y,
                     bool* x_finite) {
  const ConvAlgo a = conv_plan(s).fwd;
  if (x_finite && a == ConvAlgo::kDepthwise) {
    conv2d_forward_depthwise(s, x, w, b, relu, y, x_finite);
  } else if (x_finite && a == ConvAlgo::kPointwise) {
    conv2d_forward_pointwise(s, x, w, b, relu, y, x_finite);
  } else {
    if (x_finite && !(*x_finite = finite_kernels().f32(x, s.N * s.C * s.H * s.W))) return;
    forward_by(a, s, x, w, b, relu, y);
  }
}

// One pixel in and out (a squeeze-and-excite 1x1 conv on a 1x1 map): channels first and
// channels last are the same memory for x, y, gy and gx, so the channels-last plan runs on the
// arrays as they are. Channels first took one product per image there (N8, 576 -> 144 through
// the torch bridge: 153 us against 35 us for the pointwise kernel).
ConvShape single_pixel_as_cl(const ConvShape& s) {
  ConvShape t = s;
  if (!s.cl && s.H == 1 && s.W == 1 && s.OH == 1 && s.OW == 1) t.cl = true;
  return t;
}

void forward_any(const ConvShape& s0, const float* x, const float* w, const float* b, bool relu, float* y,
                 bool* x_finite) {
  const ConvShape s = single_pixel_as_cl(s0);
  // Channels first with few input channels: the planar kernel on x and y as they are (the
  // transposed copies cost about as much as the convolution: conv_planar.cpp). The backward
  // of these shapes still goes through channels last.
  if (planar_ok(s)) {
    if (x_finite && !(*x_finite = finite_kernels().f32(x, s.N * s.C * s.H * s.W))) return;
    conv2d_forward_planar(s, x, w, b, relu, y);
    return;
  }
  if (depthwise_nchw_tiles_ok(s)) {  // the forward on channels-last tiles (conv_depthwise.cpp)
    conv2d_forward_depthwise(s, x, w, b, relu, y, x_finite);
    return;
  }
  if (grouped_nchw_tiles_ok(s)) {  // likewise for small groups
    conv2d_forward_grouped_nchw_tiles(s, x, w, b, relu, y, x_finite);
    return;
  }
  if (nchw_via_cl(s)) {  // the check runs on the transposed copy, whose values are x's
    const ConvShape t = as_cl(s);
    const std::unique_ptr<float[]> xt(new float[s.N * s.C * s.H * s.W]), yt(new float[s.N * s.OC * s.OH * s.OW]);
    transpose_images(x, s.N, s.C, s.H * s.W, xt.get());
    forward_planned(t, xt.get(), w, b, relu, yt.get(), x_finite);
    if (x_finite && !*x_finite) return;
    transpose_images(yt.get(), s.N, s.OH * s.OW, s.OC, y);
    return;
  }
  forward_planned(s, x, w, b, relu, y, x_finite);
}

}  // namespace

void conv2d_forward(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y) {
  forward_any(s, x, w, b, relu, y, nullptr);
}

bool conv2d_forward_checked(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                            float* y) {
  bool finite = true;
  forward_any(s, x, w, b, relu, y, &finite);
  return finite;
}

void conv2d_backward(const ConvShape& s0, const float* gy, const float* x, const float* w, float* gx, float* gw,
                     float* gb) {
  const ConvShape s = single_pixel_as_cl(s0);
  if (nchw_via_cl(s)) {
    const ConvShape t = as_cl(s);
    // (uninitialised: every element is written before it is read)
    const std::unique_ptr<float[]> gyt(new float[s.N * s.OC * s.OH * s.OW]), xt(new float[s.N * s.C * s.H * s.W]),
        gxt(gx ? new float[s.N * s.C * s.H * s.W] : nullptr);
    transpose_images(gy, s.N, s.OC, s.OH * s.OW, gyt.get());
    transpose_images(x, s.N, s.C, s.H * s.W, xt.get());
    conv2d_backward(t, gyt.get(), xt.get(), w, gxt.get(), gw, gb);
    if (gx) transpose_images(gxt.get(), s.N, s.H * s.W, s.C, gx);
    return;
  }
  const ConvPlan p = conv_plan(s);
  if (p.gw == ConvAlgo::kDepthwise) {
    conv2d_backward_depthwise(s, gy, x, w, gx, gw, gb);
    return;
  }
  if (p.gw == ConvAlgo::kGrouped) {
    conv2d_backward_grouped_small(s, gy, x, w, gx, gw, gb);
    return;
  }
  if (gx && p.gx_as_conv) {
    const ConvShape t = grad_x_conv(s);
    const std::vector<float> wf = pack_weights(w, weight_pack(WLayout::kCOKf, s, 0));
    forward_by(p.gx, t, gy, wf.data(), nullptr, false, gx);
    gx = nullptr;  // done
  }
  if (gx && p.gx_phases) {
    conv2d_gx_phases(s, gy, w, gx);
    gx = nullptr;  // done
  }
  if (p.gw == ConvAlgo::kIm2col) {  // all three are then: one pass over col tiles
    conv2d_backward_im2col(s, gy, x, w, gx, gw, gb);
    return;
  }
  if (gw && p.gw == ConvAlgo::kPointwise) {
    conv2d_gw_pointwise(s, gy, x, gw);
    gw = nullptr;  // grad_b, if asked, by the direct kernel's row sums below
  }
  if (gw && p.gw != ConvAlgo::kDirect) {
    (p.gw == ConvAlgo::kWino ? conv2d_wino_gw : conv2d_wino1d_gw)(s, gy, x, gw, gb);
    gw = gb = nullptr;  // done
  }
  // What is left is the direct kernels' (p.gx without gx_as_conv, p.gw, p.gb): one call.
  if (gx || gw || gb) conv2d_backward_direct(s, gy, x, w, gx, gw, gb);
}

const ConvKernels& conv_kernels() {
  static const ConvKernels k{&conv2d_forward, &conv2d_forward_naive, &conv2d_backward, &conv2d_backward_naive,
                             &conv2d_forward_checked};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
