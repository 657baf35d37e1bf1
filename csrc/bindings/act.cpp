// bindings/act.cpp: _C.gelu_tanh(x) (any float32 array; a contiguous copy is made when x is
// not C-contiguous) and _C.swiglu(x) (x (rows, 2I) float32 with contiguous rows: silu of the
// first half times the second). Both return new arrays (act.h).
#include "bindings/common.h"
#include "cpu/act.h"

namespace pyaiml {

void register_act(py::module_& m) {
  m.def("gelu_tanh", [](py::array x) -> py::array {
    require_dtype<float>(x, "gelu_tanh", "x");
    py::array_t<float, py::array::c_style | py::array::forcecast> c(aligned(x));
    std::vector<py::ssize_t> shape(c.shape(), c.shape() + c.ndim());
    py::array_t<float> y = new_aligned_array<float>(shape);
    const float* px = c.data();
    float* py_ = y.mutable_data();
    const int64_t n = c.size();
    {
      py::gil_scoped_release nogil;
      act_kernels().gelu_tanh(px, py_, n);
    }
    return std::move(y);
  }, py::arg("x"));
  m.def("swiglu", [](py::array x) -> py::array {
    const char* op = "swiglu";
    require_dtype<float>(x, op, "x");
    require_ndim(x, 2, op, "x");
    x = aligned(x);
    auto s = elem_strides(x, op, "x");
    PYAIML_CHECK(x.shape(1) % 2 == 0, op, ": x must be (rows, 2 I). Received ", shape_str(x));
    PYAIML_CHECK(s[1] == 1 || x.shape(1) == 0 || x.shape(0) == 0, op, ": x's rows must be contiguous");
    const int64_t rows = x.shape(0), I = x.shape(1) / 2;
    py::array_t<float> y = new_aligned_array<float>({rows, I});
    const float* px = static_cast<const float*>(x.data());
    float* py_ = y.mutable_data();
    {
      py::gil_scoped_release nogil;
      act_kernels().swiglu(px, s[0], py_, rows, I);
    }
    return std::move(y);
  }, py::arg("x"));
}

}  // namespace pyaiml
