// bindings/norm.cpp: _C.norm(x, weight=None, bias=None, eps=1e-5, rms=False): LayerNorm or
// RMSNorm over the last axis of a 2-D float32 array whose rows are contiguous (any row
// stride); weight / bias (n,) float32 or None. Returns a new C-contiguous (rows, n) array.
// pyaiml/ops/norm.py reshapes the public (..., n) arguments and validates them.
#include "bindings/common.h"
#include "cpu/norm.h"

namespace pyaiml {

void register_norm(py::module_& m) {
  m.def(
      "norm",
      [](py::array x, py::object weight, py::object bias, double eps, bool rms) -> py::array {
        const char* op = rms ? "rms_norm" : "layer_norm";
        require_dtype<float>(x, op, "x");
        require_ndim(x, 2, op, "x");
        x = aligned(x);
        auto sx = elem_strides(x, op, "x");
        PYAIML_CHECK(sx[1] == 1 || x.shape(1) <= 1 || x.shape(0) == 0, op, ": x's rows must be contiguous");
        NormArgs a;
        a.rows = x.shape(0);
        a.n = x.shape(1);
        a.x = static_cast<const float*>(x.data());
        a.ldx = sx[0];
        a.eps = static_cast<float>(eps);
        a.rms = rms;
        py::array_t<float> w_arr, b_arr;
        a.w = optional_vector(weight, a.n, op, "weight", w_arr);
        a.b = optional_vector(bias, a.n, op, "bias", b_arr);
        py::array_t<float> y = new_aligned_array<float>({a.rows, a.n});
        a.y = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          norm_kernels().norm(a);
        }
        return std::move(y);
      },
      py::arg("x"), py::arg("weight") = py::none(), py::arg("bias") = py::none(), py::arg("eps") = 1e-5,
      py::arg("rms") = false);
  m.def(
      "layer_norm_backward",
      [](py::array g, py::array x, py::object weight, double eps, bool need_dx, bool need_w, bool need_b) {
        const char* op = "layer_norm_backward";
        auto x_a = require_contiguous<float>(x, op, "x");
        auto g_a = require_contiguous<float>(g, op, "grad_out");
        require_ndim(x_a, 2, op, "x");
        PYAIML_CHECK(g_a.ndim() == 2 && g_a.shape(0) == x_a.shape(0) && g_a.shape(1) == x_a.shape(1), op,
                     ": grad_out must have x's shape ", shape_str(x_a), ". Received ", shape_str(g_a));
        NormBackArgs a;
        a.rows = x_a.shape(0);
        a.n = x_a.shape(1);
        a.x = x_a.data();
        a.g = g_a.data();
        a.eps = static_cast<float>(eps);
        py::array_t<float> w_arr;
        a.w = optional_vector(weight, a.n, op, "weight", w_arr);
        py::object dx = py::none(), dw = py::none(), db = py::none();
        if (need_dx) {
          auto t = new_aligned_array<float>({a.rows, a.n});
          a.dx = t.mutable_data();
          dx = t;
        }
        if (need_w) {
          auto t = new_aligned_array<float>({a.n});
          a.dw = t.mutable_data();
          dw = t;
        }
        if (need_b) {
          auto t = new_aligned_array<float>({a.n});
          a.db = t.mutable_data();
          db = t;
        }
        {
          py::gil_scoped_release nogil;
          norm_kernels().layer_norm_backward(a);
        }
        return py::make_tuple(dx, dw, db);
      },
      py::arg("grad_out"), py::arg("x"), py::arg("weight") = py::none(), py::arg("eps") = 1e-5,
      py::arg("need_dx") = true, py::arg("need_weight") = true, py::arg("need_bias") = true,
      "Gradients of layer_norm over the last axis of 2-D float32 rows: (grad_x or None, grad_weight or None, "
      "grad_bias or None) from grad_out and x (the statistics recomputed).");
}

}  // namespace pyaiml
