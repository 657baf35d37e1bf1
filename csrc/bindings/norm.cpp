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
}

}  // namespace pyaiml
