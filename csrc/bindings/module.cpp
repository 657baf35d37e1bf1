// module.cpp: the one PYBIND11_MODULE (pyaiml._C). Each op family registers itself from its
// own bindings/<family>.cpp.
#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "bindings/common.h"
#include "common/isa.h"
#include "common/parallel.h"
#include "cpu/finite.h"

namespace pyaiml {
void register_gemm(py::module_& m);
void register_word2vec(py::module_& m);
void register_hmm(py::module_& m);
void register_conv(py::module_& m);
void register_attention(py::module_& m);
void register_rnn(py::module_& m);
void register_norm(py::module_& m);
void register_act(py::module_& m);
void register_sequential(py::module_& m);
void register_decoder(py::module_& m);
void register_serve(py::module_& m);

namespace {

PyObject* py_getenv(PyObject*, PyObject* name) {
  const char* n = PyUnicode_AsUTF8(name);
  if (!n) return nullptr;
  const char* v = std::getenv(n);
  if (!v) Py_RETURN_NONE;
  return PyUnicode_DecodeFSDefault(v);  // as os.environ decodes
}

}  // namespace
}  // namespace pyaiml

PYBIND11_MODULE(_C, m) {
  using namespace pyaiml;
  m.doc() = "pyaiml native kernels (C++). Use pyaiml.ops, not this module.";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::bad_alloc&) {
      PyErr_SetString(PyExc_MemoryError, "pyaiml: out of memory");
    }
  });

  // Called by pyaiml/_backend.py right after the import: a PYAIML_ISA that this CPU cannot
  // run raises ValueError there. (An exception thrown by the module's init would reach
  // Python as an ImportError, indistinguishable from a missing build.)
  m.def("validate_isa_env", &validate_isa_env);
  m.def("isa", [] { return std::string(isa_name(active_isa())); }, "ISA the kernels run with.");
  m.def("best_isa", [] { return std::string(isa_name(best_isa())); });
  m.def("compiled_isas", [] {
    std::vector<std::string> out;
    for (Isa i : {Isa::baseline, Isa::avx2, Isa::avx512})
      if (isa_compiled(i)) out.push_back(isa_name(i));
    return out;
  });
  m.def("supported_isas", [] {
    std::vector<std::string> out;
    for (Isa i : {Isa::baseline, Isa::avx2, Isa::avx512})
      if (isa_compiled(i) && cpu_supports(i)) out.push_back(isa_name(i));
    return out;
  });
  m.def("int8_dot", [] {
    return std::string(active_isa() == Isa::avx512 && cpu_has_avx512_vnni() ? "avx512_vnni" : "float32");
  }, "How the W8A8 kernels take their int8 block sums: AVX-512 VNNI or float32 arithmetic (the same bits).");
  m.def("get_num_threads", &get_num_threads);
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.attr("MAX_NUM_THREADS") = kMaxThreads;
  m.def("default_num_threads", &default_num_threads);
  m.def("get_spin_us", &get_spin_us);
  m.def("set_spin_us", &set_spin_us, py::arg("us"));
  m.def("park_threads", &park_threads);
  m.def("set_host_openmp", &set_host_openmp, py::arg("on"),
        "Run parallel_for on the process's OpenMP runtime (True) or pyaiml's pool (False); "
        "returns False when no OpenMP runtime is loaded");
  m.def("get_host_openmp", &get_host_openmp);
  // Testing hook: parallel_for over [0, n) in chunks of `grain`; each element records the
  // thread_index() that ran it (a visit count past 1 shows as -2); the chunk holding element
  // `fail_at` (when >= 0) throws, and the error must reach the caller.
  m.def(
      "_parallel_probe",
      [](int64_t n, int64_t grain, int64_t fail_at) {
        PYAIML_CHECK(n >= 0 && grain >= 1, "_parallel_probe: n must be >= 0 and grain >= 1. Received n=", n,
                     ", grain=", grain);
        py::array_t<int32_t> out(n);
        int32_t* o = out.mutable_data();
        std::fill(o, o + n, int32_t(-1));
        {
          py::gil_scoped_release nogil;
          parallel_for(n, grain, [&](int64_t b, int64_t e) {
            if (fail_at >= b && fail_at < e) throw std::runtime_error("_parallel_probe: chunk failed");
            for (int64_t i = b; i < e; ++i) o[i] = o[i] == -1 ? int32_t(thread_index()) : int32_t(-2);
          });
        }
        return out;
      },
      py::arg("n"), py::arg("grain"), py::arg("fail_at") = -1);
#ifdef PYAIML_VERSION_INFO
  m.attr("__version__") = PYAIML_VERSION_INFO;
#endif

  // getenv(name) -> str or None: the C library's environment, which every os.environ
  // assignment and deletion updates (putenv / unsetenv). pyaiml/_backend.py reads
  // PYAIML_BACKEND through it on every op call, so it uses the plain CPython calling
  // convention (no pybind11 argument conversion); os.environ.get raises and catches two
  // KeyErrors when the variable is unset.
  static PyMethodDef getenv_def[] = {
      {"getenv", py_getenv, METH_O, "getenv(name) -> str or None, from the C library's environment"},
      {nullptr, nullptr, 0, nullptr}};
  if (PyModule_AddFunctions(m.ptr(), getenv_def) != 0) throw py::error_already_set();

  m.def(
      "all_finite",
      [](py::array a) {
        // Contiguous aligned float32/float64: one vectorised pass (threaded when large), no
        // temporary (cpu/finite.h); others: NumPy.
        if (!(a.flags() & py::array::c_style) || !is_aligned(a)) {
          py::object np = py::module_::import("numpy");
          return np.attr("isfinite")(a).attr("all")().cast<bool>();
        }
        const int64_t n = a.size();
        bool ok = true;
        // The GIL is let go only for scans long enough to be worth it: a server's event loop
        // checks each request's small tensor here, and a release hands the GIL to any thread
        // waiting for it (the batcher), so the loop then waits to get it back.
        const bool release = a.nbytes() >= (int64_t(1) << 16);
        if (a.dtype().is(py::dtype::of<float>())) {
          const float* p = static_cast<const float*>(a.data());
          if (!release) return finite_kernels().f32(p, n);
          py::gil_scoped_release nogil;
          ok = finite_kernels().f32(p, n);
        } else if (a.dtype().is(py::dtype::of<double>())) {
          const double* p = static_cast<const double*>(a.data());
          if (!release) return finite_kernels().f64(p, n);
          py::gil_scoped_release nogil;
          ok = finite_kernels().f64(p, n);
        } else {
          fail("all_finite: a must be float32 or float64. Received ", dtype_str(a));
        }
        return ok;
      },
      py::arg("a"));

  register_gemm(m);
  register_word2vec(m);
  register_hmm(m);
  register_conv(m);
  register_attention(m);
  register_rnn(m);
  register_norm(m);
  register_act(m);
  register_sequential(m);
  register_decoder(m);
  register_serve(m);
}
