// bindings/rnn.cpp: _C.lstm_forward / _C.lstm_backward and _C.gru_forward / _C.gru_backward
// (float32), the fused sequence kernels of cpu/rnn.h. Arrays are validated here (dtype, C
// order, shapes agreeing with xp (B, T, G H) and U (H, G H), G = 4 or 3); outputs are
// allocated before the GIL is released.
// pyaiml/ops/rnn.py is the public entry (it fills in zero states and fixes dtypes).
// Tests: tests/test_rnn_kernel.py.
#include "bindings/common.h"
#include "cpu/rnn.h"

namespace pyaiml {

namespace {

struct LstmPrep {
  LstmArgs a;
  py::array_t<float> U, h0, c0;
  py::array mask;
};

py::array_t<float> f32_shaped(const py::array& x, const char* op, const char* name,
                              std::initializer_list<int64_t> shape) {
  auto c = require_contiguous<float>(x, op, name);
  bool ok = c.ndim() == static_cast<py::ssize_t>(shape.size());
  int d = 0;
  for (int64_t s : shape) ok = ok && c.shape(d++) == s;
  if (!ok) {
    std::string want = "(";
    d = 0;
    for (int64_t s : shape) want += (d++ ? ", " : "") + std::to_string(s);
    fail(op, ": ", name, " must have shape ", want, shape.size() == 1 ? ",)" : ")", ". Received ", shape_str(c));
  }
  return c;
}

// U (H, 4H), h0 / c0 (B, H), mask None or (B, T) bool/uint8, for sizes B, T taken from xp or hs.
LstmPrep prepare(const char* op, int64_t B, int64_t T, py::array U, py::array h0, py::array c0, py::object mask) {
  LstmPrep p;
  p.U = require_contiguous<float>(U, op, "recurrent_kernel");
  PYAIML_CHECK(p.U.ndim() == 2 && p.U.shape(1) == 4 * p.U.shape(0) && p.U.shape(0) >= 1, op,
               ": recurrent_kernel must have shape (units, 4 * units). Received ", shape_str(p.U));
  const int64_t H = p.U.shape(0);
  p.h0 = f32_shaped(h0, op, "h0", {B, H});
  p.c0 = f32_shaped(c0, op, "c0", {B, H});
  LstmArgs& a = p.a;
  a.B = B;
  a.T = T;
  a.H = H;
  a.U = p.U.data();
  a.h0 = p.h0.data();
  a.c0 = p.c0.data();
  if (!mask.is_none()) {
    p.mask = mask.cast<py::array>();
    PYAIML_CHECK(p.mask.dtype().is(py::dtype::of<bool>()) || p.mask.dtype().is(py::dtype::of<uint8_t>()), op,
                 ": mask must have dtype bool or uint8. Received ", dtype_str(p.mask));
    PYAIML_CHECK(p.mask.flags() & py::array::c_style, op, ": mask must be C-contiguous");
    PYAIML_CHECK(p.mask.ndim() == 2 && p.mask.shape(0) == B && p.mask.shape(1) == T, op,
                 ": mask must have shape (batch, steps) = (", B, ", ", T, "). Received ", shape_str(p.mask));
    a.mask = static_cast<const uint8_t*>(p.mask.data());
  }
  return p;
}

struct GruPrep {
  GruArgs a;
  py::array_t<float> U, brec, h0;
  py::array mask;
};

GruPrep gru_prepare(const char* op, int64_t B, int64_t T, py::array U, py::object brec, py::array h0,
                    py::object mask) {
  GruPrep p;
  p.U = require_contiguous<float>(U, op, "recurrent_kernel");
  PYAIML_CHECK(p.U.ndim() == 2 && p.U.shape(1) == 3 * p.U.shape(0) && p.U.shape(0) >= 1, op,
               ": recurrent_kernel must have shape (units, 3 * units). Received ", shape_str(p.U));
  const int64_t H = p.U.shape(0);
  p.h0 = f32_shaped(h0, op, "h0", {B, H});
  GruArgs& a = p.a;
  a.B = B;
  a.T = T;
  a.H = H;
  a.U = p.U.data();
  a.h0 = p.h0.data();
  if (!brec.is_none()) {
    p.brec = f32_shaped(brec.cast<py::array>(), op, "recurrent_bias", {3 * H});
    a.brec = p.brec.data();
  }
  if (!mask.is_none()) {
    p.mask = mask.cast<py::array>();
    PYAIML_CHECK(p.mask.dtype().is(py::dtype::of<bool>()) || p.mask.dtype().is(py::dtype::of<uint8_t>()), op,
                 ": mask must have dtype bool or uint8. Received ", dtype_str(p.mask));
    PYAIML_CHECK(p.mask.flags() & py::array::c_style, op, ": mask must be C-contiguous");
    PYAIML_CHECK(p.mask.ndim() == 2 && p.mask.shape(0) == B && p.mask.shape(1) == T, op,
                 ": mask must have shape (batch, steps) = (", B, ", ", T, "). Received ", shape_str(p.mask));
    a.mask = static_cast<const uint8_t*>(p.mask.data());
  }
  return p;
}

}  // namespace

void register_rnn(py::module_& m) {
  m.def(
      "lstm_forward",
      [](py::array xp, py::array U, py::array h0, py::array c0, py::object mask) {
        const char* op = "lstm_forward";
        auto x = require_contiguous<float>(xp, op, "xp");
        require_ndim(x, 3, op, "xp");
        const int64_t B = x.shape(0), T = x.shape(1);
        PYAIML_CHECK(B >= 1 && T >= 1, op, ": xp must have at least one row and one step. Received ", shape_str(x));
        LstmPrep p = prepare(op, B, T, U, h0, c0, mask);
        LstmArgs& a = p.a;
        const int64_t H = a.H;
        PYAIML_CHECK(x.shape(2) == 4 * H, op, ": xp must have shape (batch, steps, 4 * units) = (", B, ", ", T, ", ",
                     4 * H, ") for a recurrent_kernel of shape ", shape_str(p.U), ". Received ", shape_str(x));
        a.xp = x.data();
        auto hs = new_aligned_array<float>({B, T, H});
        auto cs = new_aligned_array<float>({B, T + 1, H});
        auto gates = new_aligned_array<float>({B, T, 4 * H});
        auto tc = new_aligned_array<float>({B, T, H});
        a.hs = hs.mutable_data();
        a.cs = cs.mutable_data();
        a.gates = gates.mutable_data();
        a.tc = tc.mutable_data();
        {
          py::gil_scoped_release nogil;
          rnn_kernels().lstm_forward(a);
        }
        return py::make_tuple(hs, cs, gates, tc);
      },
      py::arg("xp"), py::arg("recurrent_kernel"), py::arg("h0"), py::arg("c0"), py::arg("mask") = py::none(),
      "LSTM over all steps: (hs (B, T, H), cs (B, T + 1, H), gates (B, T, 4H), tanh(c) (B, T, H)).");

  m.def(
      "lstm_backward",
      [](py::object dhs, py::object dcT, py::array U, py::array h0, py::array c0, py::object mask, py::array hs,
         py::array cs, py::array gates, py::array tc, bool need_recurrent_kernel, py::object x, py::object kernel) {
        const char* op = "lstm_backward";
        auto hs_a = require_contiguous<float>(hs, op, "hs");
        require_ndim(hs_a, 3, op, "hs");
        const int64_t B = hs_a.shape(0), T = hs_a.shape(1);
        PYAIML_CHECK(B >= 1 && T >= 1, op, ": hs must have at least one row and one step. Received ", shape_str(hs_a));
        LstmPrep p = prepare(op, B, T, U, h0, c0, mask);
        LstmArgs& a = p.a;
        const int64_t H = a.H;
        hs_a = f32_shaped(hs_a, op, "hs", {B, T, H});
        auto cs_a = f32_shaped(cs, op, "cs", {B, T + 1, H});
        auto g_a = f32_shaped(gates, op, "gates", {B, T, 4 * H});
        auto tc_a = f32_shaped(tc, op, "tc", {B, T, H});
        py::array_t<float> dhs_a, dcT_a;
        if (!dhs.is_none()) {
          dhs_a = f32_shaped(dhs.cast<py::array>(), op, "grad_h", {B, T, H});
          a.dhs = dhs_a.data();
        }
        if (!dcT.is_none()) {
          dcT_a = f32_shaped(dcT.cast<py::array>(), op, "grad_c", {B, H});
          a.dcT = dcT_a.data();
        }
        a.hs = const_cast<float*>(hs_a.data());
        a.cs = const_cast<float*>(cs_a.data());
        a.gates = const_cast<float*>(g_a.data());
        a.tc = const_cast<float*>(tc_a.data());
        auto dxp = new_aligned_array<float>({B, T, 4 * H});
        auto dh0 = new_aligned_array<float>({B, H});
        auto dc0 = new_aligned_array<float>({B, H});
        py::object dU_obj = py::none();
        if (need_recurrent_kernel) {
          auto dU = new_aligned_array<float>({H, 4 * H});
          a.dU = dU.mutable_data();
          dU_obj = dU;
        }
        py::array_t<float> x_a;
        py::object dW_obj = py::none(), db_obj = py::none();
        if (!x.is_none()) {
          x_a = require_contiguous<float>(x.cast<py::array>(), op, "x");
          PYAIML_CHECK(x_a.ndim() == 3 && x_a.shape(0) == B && x_a.shape(1) == T && x_a.shape(2) >= 1, op,
                       ": x must have shape (batch, steps, features) = (", B, ", ", T, ", D >= 1). Received ",
                       shape_str(x_a));
          a.D = x_a.shape(2);
          a.x = x_a.data();
          auto dW = new_aligned_array<float>({a.D, 4 * H});
          auto db = new_aligned_array<float>({4 * H});
          a.dW = dW.mutable_data();
          a.db = db.mutable_data();
          dW_obj = dW;
          db_obj = db;
        }
        py::array_t<float> k_a;
        py::object dx_obj = py::none();
        if (!kernel.is_none()) {
          k_a = require_contiguous<float>(kernel.cast<py::array>(), op, "kernel");
          PYAIML_CHECK(k_a.ndim() == 2 && k_a.shape(1) == 4 * H && k_a.shape(0) >= 1 &&
                           (x.is_none() || k_a.shape(0) == a.D),
                       op, ": kernel must have shape (features, 4 * units) = (", x.is_none() ? std::string("D") :
                       std::to_string(a.D), ", ", 4 * H, "). Received ", shape_str(k_a));
          a.D = k_a.shape(0);
          a.Wk = k_a.data();
          auto dx = new_aligned_array<float>({B, T, a.D});
          a.dx = dx.mutable_data();
          dx_obj = dx;
        }
        a.dxp = dxp.mutable_data();
        a.dh0 = dh0.mutable_data();
        a.dc0 = dc0.mutable_data();
        {
          py::gil_scoped_release nogil;
          rnn_kernels().lstm_backward(a);
        }
        return py::make_tuple(dxp, dU_obj, dh0, dc0, dW_obj, db_obj, dx_obj);
      },
      py::arg("grad_h"), py::arg("grad_c"), py::arg("recurrent_kernel"), py::arg("h0"), py::arg("c0"),
      py::arg("mask"), py::arg("hs"), py::arg("cs"), py::arg("gates"), py::arg("tc"),
      py::arg("need_recurrent_kernel") = true, py::arg("x") = py::none(), py::arg("kernel") = py::none(),
      "Backward through time: (grad_xp (B, T, 4H), grad_recurrent_kernel (H, 4H) or None, grad_h0, grad_c0, "
      "grad_kernel (D, 4H) and grad_bias (4H,) when x (B, T, D), the projection's input, is given, else None, "
      "grad_x (B, T, D) = grad_xp kernel^T when kernel (D, 4H) is given, else None).");

  m.def(
      "gru_forward",
      [](py::array xp, py::array U, py::object brec, py::array h0, py::object mask) {
        const char* op = "gru_forward";
        auto x = require_contiguous<float>(xp, op, "xp");
        require_ndim(x, 3, op, "xp");
        const int64_t B = x.shape(0), T = x.shape(1);
        PYAIML_CHECK(B >= 1 && T >= 1, op, ": xp must have at least one row and one step. Received ", shape_str(x));
        GruPrep p = gru_prepare(op, B, T, U, brec, h0, mask);
        GruArgs& a = p.a;
        const int64_t H = a.H;
        PYAIML_CHECK(x.shape(2) == 3 * H, op, ": xp must have shape (batch, steps, 3 * units) = (", B, ", ", T, ", ",
                     3 * H, ") for a recurrent_kernel of shape ", shape_str(p.U), ". Received ", shape_str(x));
        a.xp = x.data();
        auto hs = new_aligned_array<float>({B, T, H});
        auto gates = new_aligned_array<float>({B, T, 3 * H});
        auto hn = new_aligned_array<float>({B, T, H});
        a.hs = hs.mutable_data();
        a.gates = gates.mutable_data();
        a.hn = hn.mutable_data();
        {
          py::gil_scoped_release nogil;
          rnn_kernels().gru_forward(a);
        }
        return py::make_tuple(hs, gates, hn);
      },
      py::arg("xp"), py::arg("recurrent_kernel"), py::arg("recurrent_bias"), py::arg("h0"),
      py::arg("mask") = py::none(),
      "GRU (reset_after) over all steps: (hs (B, T, H), gates z, r, n (B, T, 3H), h U + b_rec's h part (B, T, H)).");

  m.def(
      "gru_backward",
      [](py::object dhs, py::array U, py::object brec, py::array h0, py::object mask, py::array hs, py::array gates,
         py::array hn, bool need_recurrent_kernel, bool need_recurrent_bias) {
        const char* op = "gru_backward";
        auto hs_a = require_contiguous<float>(hs, op, "hs");
        require_ndim(hs_a, 3, op, "hs");
        const int64_t B = hs_a.shape(0), T = hs_a.shape(1);
        PYAIML_CHECK(B >= 1 && T >= 1, op, ": hs must have at least one row and one step. Received ", shape_str(hs_a));
        GruPrep p = gru_prepare(op, B, T, U, brec, h0, mask);
        GruArgs& a = p.a;
        const int64_t H = a.H;
        hs_a = f32_shaped(hs_a, op, "hs", {B, T, H});
        auto g_a = f32_shaped(gates, op, "gates", {B, T, 3 * H});
        auto hn_a = f32_shaped(hn, op, "hn", {B, T, H});
        py::array_t<float> dhs_a;
        if (!dhs.is_none()) {
          dhs_a = f32_shaped(dhs.cast<py::array>(), op, "grad_h", {B, T, H});
          a.dhs = dhs_a.data();
        }
        a.hs = const_cast<float*>(hs_a.data());
        a.gates = const_cast<float*>(g_a.data());
        a.hn = const_cast<float*>(hn_a.data());
        auto dxp = new_aligned_array<float>({B, T, 3 * H});
        auto dh0 = new_aligned_array<float>({B, H});
        py::object dU_obj = py::none(), db_obj = py::none();
        if (need_recurrent_kernel) {
          auto dU = new_aligned_array<float>({H, 3 * H});
          a.dU = dU.mutable_data();
          dU_obj = dU;
        }
        if (need_recurrent_bias) {
          auto db = new_aligned_array<float>({3 * H});
          a.dbrec = db.mutable_data();
          db_obj = db;
        }
        a.dxp = dxp.mutable_data();
        a.dh0 = dh0.mutable_data();
        {
          py::gil_scoped_release nogil;
          rnn_kernels().gru_backward(a);
        }
        return py::make_tuple(dxp, dU_obj, db_obj, dh0);
      },
      py::arg("grad_h"), py::arg("recurrent_kernel"), py::arg("recurrent_bias"), py::arg("h0"), py::arg("mask"),
      py::arg("hs"), py::arg("gates"), py::arg("hn"), py::arg("need_recurrent_kernel") = true,
      py::arg("need_recurrent_bias") = true,
      "Backward through time: (grad_xp (B, T, 3H), grad_recurrent_kernel or None, grad_recurrent_bias or None, "
      "grad_h0).");
}

}  // namespace pyaiml
