// conv.h: shapes and the per-ISA kernel table of the conv family: conv2d forward/backward
// (channels first or last, groups, stride, dilation, asymmetric zero padding) and
// max_pool2d forward/backward. conv1d and max_pool1d are these with H = 1.
//
// Not here: argument validation (bindings/conv.cpp checks everything before calling),
// float64 (NumPy reference), ceil_mode/dilated pooling.
// Tests: tests/test_conv.py, tests/test_pool.py (torch and the _naive kernels as oracles).
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
  void (*max_pool2d_forward)(const PoolShape&, const float* x, float* y, int64_t* idx /* may be null */);
  // Returns false when an index lies outside [0, H*W) (such entries are skipped).
  bool (*max_pool2d_backward)(const PoolShape&, const float* gy, const float* x, const int64_t* idx /* may be null */,
                              float* gx);
};

PYAIML_KERNEL_TABLE(ConvKernels, conv_kernels)

}  // namespace pyaiml

#ifdef PYAIML_ISA_NS
namespace pyaiml {
namespace PYAIML_ISA_NS {
void max_pool2d_forward(const PoolShape& s, const float* x, float* y, int64_t* idx);
bool max_pool2d_backward(const PoolShape& s, const float* gy, const float* x, const int64_t* idx, float* gx);
}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
#endif
