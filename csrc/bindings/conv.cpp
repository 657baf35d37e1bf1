// bindings/conv.cpp: _C.conv2d / conv2d_backward / max_pool2d / max_pool2d_backward.
// Arrays are float32, C-contiguous, 4-D in their layout (cl: channels last); conv
// parameters p = (sh, sw, pt, pb, pl, pr, dh, dw, G), pool parameters q = (kh, kw, sh, sw,
// ph, pw). pyaiml/ops/conv.py and pool.py resolve torch-style arguments into these; every
// precondition is checked again here, so a direct call with bad values raises ValueError
// instead of reading out of bounds: parameters and sizes are range-checked (kMaxExtent,
// common/checks.h) before the output size is computed, so no shape arithmetic overflows.
// Inputs whose data is not aligned to 4 bytes are copied first (bindings/common.h).
// Compute runs with the GIL released. conv2d(..., check_x=True) returns (y, x_finite): x's
// NaN/inf check done by the kernel (conv.h conv2d_forward_checked), for pyaiml.ops.
#include <algorithm>
#include <array>
#include <initializer_list>

#include "bindings/common.h"
#include "cpu/conv.h"
#include "cpu/finite.h"
#include "cpu/pool.h"

namespace pyaiml {
namespace {

using P9 = std::array<int64_t, 9>;
using Q6 = std::array<int64_t, 6>;

py::array_t<float> arr4(const py::array& a, const char* op, const char* name) {
  require_ndim(a, 4, op, name);
  return require_contiguous<float>(a, op, name);
}

// Every value of `v` in [lo, kMaxExtent]; the message shows them as received.
void check_params(const char* op, const char* name, std::initializer_list<int64_t> v, int64_t lo) {
  bool low = false, high = false;
  for (int64_t e : v) {
    low |= e < lo;
    high |= e > kMaxExtent;
  }
  if (!low && !high) return;
  std::ostringstream os;
  os << "(";
  size_t i = 0;
  for (int64_t e : v) os << (i++ ? ", " : "") << e;
  os << ")";
  if (low) fail(op, ": ", name, " must be >= ", lo, ". Received ", os.str());
  fail(op, ": ", name, " must be at most ", kMaxExtent, ". Received ", os.str());
}

// Parameters and sizes are range-checked before any arithmetic on them (kMaxExtent), so
// the sums and products below fit in int64.
ConvShape conv_shape(const py::array& x, const py::array& w, const P9& p, bool cl, const char* op) {
  ConvShape s{};
  s.N = x.shape(0);
  s.C = cl ? x.shape(3) : x.shape(1);
  s.H = cl ? x.shape(1) : x.shape(2);
  s.W = cl ? x.shape(2) : x.shape(3);
  s.OC = w.shape(0);
  s.KH = w.shape(2);
  s.KW = w.shape(3);
  s.sh = p[0]; s.sw = p[1]; s.pt = p[2]; s.pl = p[4]; s.dh = p[6]; s.dw = p[7]; s.G = p[8];
  const int64_t pb = p[3], pr = p[5];
  check_params(op, "stride", {s.sh, s.sw}, 1);
  check_params(op, "dilation", {s.dh, s.dw}, 1);
  check_params(op, "padding", {s.pt, pb, s.pl, pr}, 0);
  PYAIML_CHECK(s.G >= 1 && s.C % s.G == 0 && s.OC % s.G == 0, op,
               ": groups must be >= 1 and divide the input and output channels. Received groups=", s.G,
               ", channels ", s.C, " -> ", s.OC);
  PYAIML_CHECK(w.shape(1) * s.G == s.C, op, ": weight.shape[1] must equal input channels / groups. Received weight ",
               shape_str(w), " for x ", shape_str(x));
  PYAIML_CHECK(s.N >= 1 && s.C >= 1 && s.OC >= 1 && s.KH >= 1 && s.KW >= 1 && s.H >= 1 && s.W >= 1, op,
               ": x and weight must not be empty. Received x ", shape_str(x), ", weight ", shape_str(w));
  PYAIML_CHECK(s.H <= kMaxExtent && s.W <= kMaxExtent && s.KH <= kMaxExtent && s.KW <= kMaxExtent, op,
               ": spatial and kernel sizes must be at most ", kMaxExtent, ". Received x ", shape_str(x), ", weight ",
               shape_str(w));
  const int64_t eh = s.dh * (s.KH - 1) + 1, ew = s.dw * (s.KW - 1) + 1;
  const int64_t fh = s.H + s.pt + pb, fw = s.W + s.pl + pr;
  PYAIML_CHECK(fh <= kMaxExtent && fw <= kMaxExtent, op, ": the padded input must be at most ", kMaxExtent,
               " along each dimension. Received padding (", s.pt, ", ", pb, ", ", s.pl, ", ", pr, ") for x ",
               shape_str(x));
  PYAIML_CHECK(eh <= kMaxExtent && ew <= kMaxExtent, op, ": the dilated kernel must be at most ", kMaxExtent,
               " along each dimension. Received dilation (", s.dh, ", ", s.dw, ") for weight ", shape_str(w));
  int64_t padded = 0;
  const bool huge = __builtin_mul_overflow(s.N, s.C, &padded) || __builtin_mul_overflow(padded, fh, &padded) ||
                    __builtin_mul_overflow(padded, fw, &padded) || padded > kMaxPaddedElements;
  PYAIML_CHECK(!huge, op, ": the padded input must hold at most 2^60 elements (N * C * padded H * padded W). ",
               "Received padding (", s.pt, ", ", pb, ", ", s.pl, ", ", pr, ") for x ", shape_str(x));
  PYAIML_CHECK(fh >= eh && fw >= ew, op, ": the (dilated) kernel must fit in the padded input. Received weight ",
               shape_str(w), " for x ", shape_str(x));
  s.OH = (fh - eh) / s.sh + 1;
  s.OW = (fw - ew) / s.sw + 1;
  s.cl = cl;
  return s;
}

std::vector<py::ssize_t> out_shape(const ConvShape& s) {
  if (s.cl) return {s.N, s.OH, s.OW, s.OC};
  return {s.N, s.OC, s.OH, s.OW};
}

PoolShape pool_shape(const py::array& x, const Q6& q, bool cl, const char* op) {
  PoolShape s{};
  s.N = x.shape(0);
  s.C = cl ? x.shape(3) : x.shape(1);
  s.H = cl ? x.shape(1) : x.shape(2);
  s.W = cl ? x.shape(2) : x.shape(3);
  s.KH = q[0]; s.KW = q[1]; s.sh = q[2]; s.sw = q[3]; s.ph = q[4]; s.pw = q[5];
  s.cl = cl;
  check_params(op, "kernel_size", {s.KH, s.KW}, 1);
  check_params(op, "stride", {s.sh, s.sw}, 1);
  check_params(op, "padding", {s.ph, s.pw}, 0);
  PYAIML_CHECK(2 * s.ph <= s.KH && 2 * s.pw <= s.KW, op,
               ": padding must be >= 0 and at most half the kernel size. Received (", s.ph, ", ", s.pw, ")");
  PYAIML_CHECK(s.N >= 1 && s.C >= 1 && s.H >= 1 && s.W >= 1, op, ": x must not be empty. Received ", shape_str(x));
  PYAIML_CHECK(s.H + 2 * s.ph <= kMaxExtent && s.W + 2 * s.pw <= kMaxExtent, op,
               ": the padded input must be at most ", kMaxExtent, " along each dimension. Received x ",
               shape_str(x), " with padding (", s.ph, ", ", s.pw, ")");
  PYAIML_CHECK(s.H + 2 * s.ph >= s.KH && s.W + 2 * s.pw >= s.KW, op,
               ": kernel_size must fit in the padded input. Received x ", shape_str(x));
  s.OH = (s.H + 2 * s.ph - s.KH) / s.sh + 1;
  s.OW = (s.W + 2 * s.pw - s.KW) / s.sw + 1;
  return s;
}

std::vector<py::ssize_t> pool_out(const PoolShape& s) {
  if (s.cl) return {s.N, s.OH, s.OW, s.C};
  return {s.N, s.C, s.OH, s.OW};
}

void require_shape(const py::array& a, const std::vector<py::ssize_t>& want, const char* op, const char* name) {
  bool ok = a.ndim() == (py::ssize_t)want.size();
  for (size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(i) == want[i];
  if (!ok) {
    std::ostringstream os;
    os << "(";
    for (size_t i = 0; i < want.size(); ++i) os << (i ? ", " : "") << want[i];
    os << ")";
    fail(op, ": ", name, " must have shape ", os.str(), ". Received ", shape_str(a));
  }
}

}  // namespace

void register_conv(py::module_& m) {
  m.def(
      "conv2d",
      [](py::array x_, py::array w_, py::object b_, P9 p, bool cl, bool relu, bool naive, bool check_x) -> py::object {
        const char* op = "conv2d";
        auto x = arr4(x_, op, "x");
        auto w = arr4(w_, op, "weight");
        ConvShape s = conv_shape(x, w, p, cl, op);
        py::array_t<float> b;
        const float* bp = nullptr;
        if (!b_.is_none()) {
          b = require_contiguous<float>(b_.cast<py::array>(), op, "bias");
          require_shape(b, {s.OC}, op, "bias");
          bp = b.data();
        }
        py::array_t<float> y = new_aligned_array<float>(out_shape(s));
        const float* xp = x.data();
        const float* wp = w.data();
        float* yp = y.mutable_data();
        bool finite = true;
        {
          py::gil_scoped_release nogil;
          const ConvKernels& k = conv_kernels();
          if (check_x && !naive) {
            finite = k.conv2d_forward_checked(s, xp, wp, bp, relu, yp);
          } else {
            if (check_x) finite = finite_kernels().f32(xp, s.N * s.C * s.H * s.W);
            (naive ? k.conv2d_forward_naive : k.conv2d_forward)(s, xp, wp, bp, relu, yp);
          }
        }
        if (check_x) return py::make_tuple(y, finite);
        return y;
      },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("p"), py::arg("cl"), py::arg("relu") = false,
      py::arg("naive") = false, py::arg("check_x") = false);

  m.def(
      "conv2d_backward",
      [](py::array gy_, py::array x_, py::array w_, P9 p, bool cl, bool need_b, bool naive, bool need_x,
         bool need_w) {
        const char* op = "conv2d_backward";
        auto x = arr4(x_, op, "x");
        auto w = arr4(w_, op, "weight");
        auto gy = arr4(gy_, op, "grad_out");
        ConvShape s = conv_shape(x, w, p, cl, op);
        require_shape(gy, out_shape(s), op, "grad_out");
        py::object gx_obj = py::none(), gw_obj = py::none(), gb_obj = py::none();
        float *gxp = nullptr, *gwp = nullptr, *gbp = nullptr;
        if (need_x) {
          py::array_t<float> gx = new_aligned_array<float>(std::vector<py::ssize_t>(x.shape(), x.shape() + 4));
          gxp = gx.mutable_data();
          gx_obj = gx;
        }
        if (need_w) {
          py::array_t<float> gw = new_aligned_array<float>(std::vector<py::ssize_t>(w.shape(), w.shape() + 4));
          gwp = gw.mutable_data();
          gw_obj = gw;
        }
        if (need_b) {
          py::array_t<float> gb = new_aligned_array<float>(std::vector<py::ssize_t>{s.OC});
          gbp = gb.mutable_data();
          gb_obj = gb;
        }
        const float *gyp = gy.data(), *xp = x.data(), *wp = w.data();
        {
          py::gil_scoped_release nogil;
          const ConvKernels& k = conv_kernels();
          (naive ? k.conv2d_backward_naive : k.conv2d_backward)(s, gyp, xp, wp, gxp, gwp, gbp);
        }
        return py::make_tuple(gx_obj, gw_obj, gb_obj);
      },
      py::arg("grad_out"), py::arg("x"), py::arg("weight"), py::arg("p"), py::arg("cl"), py::arg("need_b") = true,
      py::arg("naive") = false, py::arg("need_x") = true, py::arg("need_w") = true);

  // max_pool2d: (y, indices or None); with finite=True, (y, indices or None, every y finite).
  // window=True returns uint8 window positions (cpu/pool.h) instead of flat int64 indices;
  // relu=True pools into max(y, 0) (window positions: kPoolNoGrad where the max is <= 0).
  m.def(
      "max_pool2d",
      [](py::array x_, Q6 q, bool cl, bool with_idx, bool relu, bool window, bool finite) -> py::object {
        const char* op = "max_pool2d";
        auto x = arr4(x_, op, "x");
        PoolShape s = pool_shape(x, q, cl, op);
        PYAIML_CHECK(!(with_idx && window) || s.KH * s.KW <= kPoolMaxWindow, op,
                     ": window positions need kernel_size[0] * kernel_size[1] <= ", kPoolMaxWindow, ". Received (",
                     s.KH, ", ", s.KW, ")");
        py::array_t<float> y = new_aligned_array<float>(pool_out(s));
        py::object io = py::none();
        int64_t* ip = nullptr;
        uint8_t* wp = nullptr;
        if (with_idx && window) {
          py::array_t<uint8_t> win(pool_out(s));
          wp = win.mutable_data();
          io = win;
        } else if (with_idx) {
          py::array_t<int64_t> idx(pool_out(s));
          ip = idx.mutable_data();
          io = idx;
        }
        const float* xp = x.data();
        float* yp = y.mutable_data();
        bool ok;
        {
          py::gil_scoped_release nogil;
          ok = pool_kernels().forward(s, xp, yp, ip, wp, relu);
        }
        if (finite) return py::make_tuple(y, io, ok);
        return py::make_tuple(y, io);
      },
      py::arg("x"), py::arg("q"), py::arg("cl"), py::arg("with_idx") = false, py::arg("relu") = false,
      py::arg("window") = false, py::arg("finite") = false);

  // indices: flat int64 (torch's), or with window=True the uint8 window positions of the
  // forward; None recomputes the argmax from x.
  m.def(
      "max_pool2d_backward",
      [](py::array gy_, py::array x_, Q6 q, bool cl, py::object idx_, bool window) {
        const char* op = "max_pool2d_backward";
        auto x = arr4(x_, op, "x");
        auto gy = arr4(gy_, op, "grad_out");
        PoolShape s = pool_shape(x, q, cl, op);
        require_shape(gy, pool_out(s), op, "grad_out");
        py::array_t<int64_t> idx;
        py::array_t<uint8_t> win;
        const int64_t* ip = nullptr;
        const uint8_t* wp = nullptr;
        if (!idx_.is_none()) {
          // Range: the kernel checks it while reading (never writing through a bad index).
          if (window) {
            PYAIML_CHECK(s.KH * s.KW <= kPoolMaxWindow, op, ": window positions need kernel_size[0] * kernel_size[1] <= ",
                         kPoolMaxWindow, ". Received (", s.KH, ", ", s.KW, ")");
            win = require_contiguous<uint8_t>(idx_.cast<py::array>(), op, "indices");
            require_shape(win, pool_out(s), op, "indices");
            wp = win.data();
          } else {
            idx = require_contiguous<int64_t>(idx_.cast<py::array>(), op, "indices");
            require_shape(idx, pool_out(s), op, "indices");
            ip = idx.data();
          }
        }
        py::array_t<float> gx = new_aligned_array<float>(std::vector<py::ssize_t>(x.shape(), x.shape() + 4));
        const float *gyp = gy.data(), *xp = x.data();
        float* gxp = gx.mutable_data();
        bool in_range;
        {
          py::gil_scoped_release nogil;
          in_range = pool_kernels().backward(s, gyp, xp, ip, wp, gxp);
        }
        if (window)
          PYAIML_CHECK(in_range, op, ": window indices must lie in [0, kernel_size[0] * kernel_size[1]) = [0, ",
                       s.KH * s.KW, ") and inside the input, or be ", (int)kPoolNoGrad, " (no gradient)");
        PYAIML_CHECK(in_range, op, ": indices must lie in [0, H*W) = [0, ", s.H * s.W, ")");
        return gx;
      },
      py::arg("grad_out"), py::arg("x"), py::arg("q"), py::arg("cl"), py::arg("indices") = py::none(),
      py::arg("window") = false);
}

}  // namespace pyaiml
