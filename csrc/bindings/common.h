// bindings/common.h: helpers shared by the binding files (the only files that include
// pybind11). They validate arrays, read strides in elements, and allocate outputs before
// the GIL is released.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <sstream>
#include <string>
#include <algorithm>
#include <vector>

#include "common/checks.h"

namespace pyaiml {
namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) os << (i ? ", " : "") << a.shape(i);
  if (a.ndim() == 1) os << ",";
  os << ")";
  return os.str();
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

template <class T>
inline void require_dtype(const py::array& a, const char* op, const char* name) {
  PYAIML_CHECK(py::isinstance<py::array_t<T>>(a) || a.dtype().is(py::dtype::of<T>()), op, ": ", name,
               " must have dtype ", py::str(py::dtype::of<T>()).cast<std::string>(), ". Received ",
               dtype_str(a));
}

inline void require_ndim(const py::array& a, int ndim, const char* op, const char* name) {
  PYAIML_CHECK(a.ndim() == ndim, op, ": ", name, " must be ", ndim, "-D. Received shape ", shape_str(a));
}

// Element strides of `a` (must be whole multiples of the item size).
inline std::vector<int64_t> elem_strides(const py::array& a, const char* op, const char* name) {
  std::vector<int64_t> s(a.ndim());
  const int64_t item = a.itemsize();
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    PYAIML_CHECK(a.strides(i) % item == 0, op, ": ", name, " has a stride of ", a.strides(i),
                 " bytes, not a multiple of its item size ", item);
    s[i] = a.strides(i) / item;
  }
  return s;
}

inline bool is_aligned(const py::array& a) {
  return reinterpret_cast<uintptr_t>(a.data()) % static_cast<uintptr_t>(a.itemsize()) == 0;
}

// `a` itself, or an aligned copy of it (same shape, NumPy's order "K") when its data does
// not start on a multiple of its item size, as in a view np.frombuffer(buf, np.float32,
// offset=1). The kernels read elements through T* and through vector types that assume
// element alignment. NumPy's own allocations are aligned, so the common case is one test.
inline py::array aligned(const py::array& a) {
  if (is_aligned(a)) return a;
  return py::module_::import("numpy").attr("array")(a);
}

// An input the kernel only reads: dtype T, C-contiguous, aligned (copied if it is not).
template <class T>
inline py::array_t<T> require_contiguous(const py::array& a, const char* op, const char* name) {
  require_dtype<T>(a, op, name);
  PYAIML_CHECK(a.flags() & py::array::c_style, op, ": ", name, " must be C-contiguous");
  return py::array_t<T>(aligned(a));
}

// An optional float32 vector argument of length n (a bias, a weight): nullptr for None, else
// its data, kept alive by `keep` (a copy when it is not contiguous and aligned).
inline const float* optional_vector(const py::object& v, int64_t n, const char* op, const char* name,
                                    py::array_t<float>& keep) {
  if (v.is_none()) return nullptr;
  keep = require_contiguous<float>(v.cast<py::array>(), op, name);
  PYAIML_CHECK(keep.ndim() == 1 && keep.shape(0) == n, op, ": ", name, " must have shape (", n, ",). Received ",
               shape_str(keep));
  return keep.data();
}

// An array the kernel writes in place cannot be swapped for a copy: a misaligned one is
// refused.
inline void require_aligned(const py::array& a, const char* op, const char* name) {
  PYAIML_CHECK(is_aligned(a), op, ": ", name, " must be aligned to its item size (", a.itemsize(),
               " bytes); its data starts at an odd address");
}

// A new C-contiguous array whose data starts on a 64-byte boundary (NumPy's own allocations
// are 16-byte aligned, so every 64-byte vector store into them would straddle two cache
// lines). The memory is freed when the array is.
// A size whose byte count overflows is out of memory too (never a short allocation).
// Failure is a MemoryError naming the shape and the bytes asked for.
[[noreturn]] inline void out_of_memory(const std::vector<py::ssize_t>& shape, double bytes) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 6) bytes /= 1024.0, ++u;
  char size[32];
  std::snprintf(size, sizeof size, "%.1f %s", bytes, unit[u]);
  PyErr_SetString(PyExc_MemoryError,
                  ("pyaiml: cannot allocate an output of shape (" + dims + ") (" + size + ")").c_str());
  throw py::error_already_set();
}

template <class T>
inline py::array_t<T> new_aligned_array(const std::vector<py::ssize_t>& shape) {
  size_t bytes = sizeof(T);
  double want = double(sizeof(T));
  for (py::ssize_t d : shape) want *= double(d);
  for (py::ssize_t d : shape)
    if (d < 0 || __builtin_mul_overflow(bytes, static_cast<size_t>(d), &bytes)) out_of_memory(shape, want);
  if (bytes > (size_t(1) << 62)) out_of_memory(shape, want);
  bytes = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (!p) out_of_memory(shape, want);
  py::capsule owner(p, [](void* q) { std::free(q); });
  return py::array_t<T>(shape, static_cast<T*>(p), owner);
}

}  // namespace pyaiml
