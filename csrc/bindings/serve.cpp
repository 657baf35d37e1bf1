// serve.cpp: helpers of the inference server's hot path (pyaiml/serve/tensors.py).
//   json_floats(a): a float32/float64 array as a JSON list, the bytes Python's json module
//     writes for a.tolist() (each element as repr() of the Python float it becomes, the
//     shortest digits that read back to the same double; NaN and inf as null, which JSON
//     lacks). Python's float repr took ~0.5 us an element: 5 of the ~30 us the server spent
//     per one-image request to the mission CNN (10 output values).
// Not here: the rest of the response (tensors.py keeps the JSON around the data).
// Tests: tests/test_serve_v2.py (against json.dumps over awkward values: subnormals, powers
// of ten at the repr's exponent switch, -0.0, NaN, inf, float32 and float64).
#include <charconv>
#include <cmath>
#include <cstring>
#include <string>

#include "bindings/common.h"

namespace pyaiml {
namespace {

// repr() of a finite double, as CPython writes it (float_repr_style 'short'): the shortest
// round-trip digits d1 d2 ... dn with decimal exponent e (value = d1.d2...dn * 10^e);
// scientific when e < -4 or e >= 16 ("1e-05", "1.5e+16": exponent sign, at least two
// digits), else positional with at least one digit after the point ("100.0", "0.0001").
void append_repr(double v, std::string& out) {
  char buf[40];
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  const char* p = buf;
  if (*p == '-') {
    out.push_back('-');
    ++p;
  }
  char dg[24];
  int n = 0;
  for (; p < r.ptr && *p != 'e'; ++p)
    if (*p != '.') dg[n++] = *p;
  int e = 0;
  std::from_chars(p + 1 + (p[1] == '+'), r.ptr, e);
  if (e < -4 || e >= 16) {
    out.push_back(dg[0]);
    if (n > 1) {
      out.push_back('.');
      out.append(dg + 1, n - 1);
    }
    out.push_back('e');
    out.push_back(e < 0 ? '-' : '+');
    const int a = e < 0 ? -e : e;
    if (a < 10) out.push_back('0');
    out += std::to_string(a);
  } else if (e < 0) {
    out += "0.";
    out.append(size_t(-e - 1), '0');
    out.append(dg, n);
  } else {
    const int ip = e + 1;  // digits before the point
    if (n <= ip) {
      out.append(dg, n);
      out.append(size_t(ip - n), '0');
      out += ".0";
    } else {
      out.append(dg, ip);
      out.push_back('.');
      out.append(dg + ip, n - ip);
    }
  }
}

template <class T>
py::bytes json_list(const T* p, int64_t n) {
  std::string out;
  out.reserve(size_t(n) * 20 + 2);
  out.push_back('[');
  for (int64_t i = 0; i < n; ++i) {
    if (i) out.push_back(',');
    const double v = double(p[i]);
    if (std::isfinite(v)) append_repr(v, out);
    else out += "null";
  }
  out.push_back(']');
  return py::bytes(out);
}

}  // namespace

void register_serve(py::module_& m) {
  m.def(
      "json_floats",
      [](const py::array& a) -> py::bytes {
        const bool f32 = a.dtype().is(py::dtype::of<float>()), f64 = a.dtype().is(py::dtype::of<double>());
        if (!f32 && !f64)
          throw py::type_error("json_floats: a must be float32 or float64. Received " +
                               std::string(py::str(a.dtype())));
        if (!(a.flags() & py::array::c_style))
          throw py::value_error("json_floats: a must be C-contiguous");
        const int64_t n = int64_t(a.size());
        if (f32) return json_list(static_cast<const float*>(a.data()), n);
        return json_list(static_cast<const double*>(a.data()), n);
      },
      py::arg("a"),
      "A float32/float64 array (C order) as the JSON list json.dumps(a.ravel().tolist()) writes, "
      "NaN and inf as null.");
}

}  // namespace pyaiml
