// conv.h: shapes and the per-ISA kernel table of the conv family: conv2d forward/backward
// (channels first or last, groups, stride, dilation, asymmetric zero padding); conv1d is
// conv2d with H = 1. Max pooling's shape (PoolShape) is here too; its kernels are in pool.h.
// The conv kernels: conv.cpp (which algorithm runs for a shape), conv_im2col.cpp,
// conv_direct.cpp, conv_winograd.cpp, conv_depthwise.cpp, conv_pointwise.cpp, conv_naive.cpp
// (shared declarations: conv_common.h).
//
// Not here: argument validation (bindings/conv.cpp checks everything before calling),
// float64 (NumPy reference), ceil_mode/dilated pooling.
// Tests: tests/test_conv.py, tests/test_conv_direct.py, tests/test_conv_algorithms.py,
// tests/test_conv_depthwise.py, tests/test_pool.py (torch and the _naive kernels as oracles).
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

// N batch, C in, OC out, H/W input, KH/KW kernel, OH/OW output, G groups.
// x is (N, C, H, W) or, with cl, (N, H, W, C); y/gy follow x's layout; w is (OC, C/G, KH, KW).
struct ConvShape {
  int64_t N, C, H, W, OC, KH, KW, OH, OW;
  int64_t sh, sw, pt, pl, dh, dw, G;
  bool cl;
};

// Window of max pooling: padding is implicit -inf; indices are flat h * W + w in x's plane.
struct PoolShape {
  int64_t N, C, H, W, KH, KW, OH, OW, sh, sw, ph, pw;
  bool cl;
};

struct ConvKernels {
  void (*conv2d_forward)(const ConvShape&, const float* x, const float* w, const float* b, bool relu, float* y);
  void (*conv2d_forward_naive)(const ConvShape&, const float* x, const float* w, const float* b, bool relu,
                               float* y);
  // Each of gx, gw, gb may be null (that gradient is not computed); the others are overwritten.
  void (*conv2d_backward)(const ConvShape&, const float* gy, const float* x, const float* w, float* gx, float* gw,
                          float* gb);
  void (*conv2d_backward_naive)(const ConvShape&, const float* gy, const float* x, const float* w, float* gx,
                                float* gw, float* gb);
  // conv2d_forward that also tells whether x is finite (no NaN or inf; pyaiml.ops' input
  // check): the depthwise and pointwise kernels scan x's rows, planes or pixel tiles as their
  // tasks reach them, so the check reads what is in cache anyway; other algorithms scan x
  // first (and skip the convolution when it is not finite: y is then unspecified).
  bool (*conv2d_forward_checked)(const ConvShape&, const float* x, const float* w, const float* b, bool relu,
                                 float* y);
};

PYAIML_KERNEL_TABLE(ConvKernels, conv_kernels)

}  // namespace pyaiml
