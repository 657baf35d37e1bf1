// bindings/act.cpp: _C.gelu_tanh(x) (any float32 array; a contiguous copy is made when x is
// not C-contiguous), _C.swiglu(x) (x (rows, 2I) float32 with contiguous rows: silu of the
// first half times the second) and _C.rope_qk(qkv, cos, sin, H, Hk) (the rotated q (B, H, L,
// D) and k (B, L, Hk, D) heads of qkv (B, L, W) with contiguous rows, tables (B, L, D/2)
// contiguous). All return new arrays (act.h).
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
  m.def("rope_qk", [](py::array qkv, py::array cos, py::array sin, int64_t H, int64_t Hk) -> py::tuple {
    const char* op = "rope_qk";
    require_dtype<float>(qkv, op, "qkv");
    require_dtype<float>(cos, op, "cos");
    require_dtype<float>(sin, op, "sin");
    require_ndim(qkv, 3, op, "qkv");
    require_ndim(cos, 3, op, "cos");
    require_ndim(sin, 3, op, "sin");
    const int64_t B = qkv.shape(0), L = qkv.shape(1), half = cos.shape(2), D = 2 * half;
    PYAIML_CHECK(H > 0 && Hk > 0 && half > 0 && (H + Hk) * D <= qkv.shape(2), op, ": qkv's rows (", qkv.shape(2),
                 ") must hold H + Hk = ", H + Hk, " heads of ", D, " values");
    PYAIML_CHECK(cos.shape(0) == B && cos.shape(1) == L && sin.shape(0) == B && sin.shape(1) == L &&
                     sin.shape(2) == half,
                 op, ": cos and sin must be (B, L, D/2) = (", B, ", ", L, ", ", half, "). Received ", shape_str(cos),
                 ", ", shape_str(sin));
    PYAIML_CHECK((cos.flags() & py::array::c_style) && (sin.flags() & py::array::c_style), op,
                 ": cos and sin must be C-contiguous");
    auto s = elem_strides(qkv, op, "qkv");
    PYAIML_CHECK(s[2] == 1 && s[0] == L * s[1], op, ": qkv's rows must be contiguous and evenly spaced");
    py::array_t<float> q = new_aligned_array<float>({B, H, L, D});
    py::array_t<float> k = new_aligned_array<float>({B, L, Hk, D});
    const float* px = static_cast<const float*>(qkv.data());
    const float* pc = static_cast<const float*>(cos.data());
    const float* ps = static_cast<const float*>(sin.data());
    float* pq = q.mutable_data();
    float* pk = k.mutable_data();
    {
      py::gil_scoped_release nogil;
      act_kernels().rope_qk(px, B, L, s[1], pc, ps, H, Hk, D, pq, pk);
    }
    return py::make_tuple(std::move(q), std::move(k));
  }, py::arg("qkv"), py::arg("cos"), py::arg("sin"), py::arg("H"), py::arg("Hk"));
}

}  // namespace pyaiml
