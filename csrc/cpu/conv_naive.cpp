// conv_naive.cpp: conv2d forward and backward as plain loops in double, every layout, group
// count, stride, dilation and padding; compiled per ISA like the rest of the family. The
// oracle of the fast kernels in tests (the kernel table's conv2d_*_naive, reached with
// naive=True in _C.conv2d / _C.conv2d_backward).
//
// Not here: anything fast (conv.cpp picks among conv_im2col.cpp, conv_direct.cpp and
// conv_winograd.cpp), validation (bindings/conv.cpp).
// Tests: tests/test_conv.py (against torch), and as the oracle in tests/test_conv.py,
// tests/test_conv_direct.py and tests/test_conv_algorithms.py.
#include <vector>

#include "cpu/conv.h"
#include "cpu/conv_common.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {
namespace {

// Flat index of x[n, c, h, w] and y[n, o, h, w] in the shape's layout.
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

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
