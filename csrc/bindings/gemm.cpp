// bindings/gemm.cpp: _C.gemm(a, b, bias=None, relu=False, naive=False, check_finite=False),
// _C.linear_q8, _C.linear_q8_packed and _C.linear_f32_packed (pyaiml.llm's layers, gemv.h).
// a: (Bt, M, K), b: (Bt, K, N), float32, any strides (0 for broadcast, negative allowed);
// returns a new C-contiguous (Bt, M, N), 64-byte aligned. An operand whose data is not
// 4-byte aligned is copied first. With check_finite it returns
// (c, finite): finite is False when some value of A B was NaN or inf, which a NaN or inf
// input always causes (overflow can too); the caller then checks the inputs. Python
// (pyaiml/ops) handles batching rules.
#include <cmath>

#include "bindings/common.h"
#include "bindings/packed.h"
#include "cpu/gemm.h"
#include "cpu/gemv.h"

namespace pyaiml {

namespace {

// What linear_q8 and linear_q8_packed check alike: dtypes (x float32, q int8, scale float16),
// ranks (x 2-D, q and scale qdim-D), K a multiple of the block, q and scale C-contiguous
// (scale aligned), x's rows contiguous (x is made aligned). Returns x's row stride.
int64_t q8_common_checks(const char* op, py::array& x, const py::array& q, const py::array& scale, int qdim) {
  require_dtype<float>(x, op, "x");
  require_dtype<int8_t>(q, op, "q");
  PYAIML_CHECK(scale.dtype().kind() == 'f' && scale.itemsize() == 2, op, ": scale must have dtype float16. Received ",
               dtype_str(scale));
  require_ndim(x, 2, op, "x");
  require_ndim(q, qdim, op, "q");
  require_ndim(scale, qdim, op, "scale");
  x = aligned(x);
  PYAIML_CHECK(x.shape(1) % kQ8Block == 0, op, ": the input size must be a multiple of ", kQ8Block, ". Received ",
               x.shape(1));
  PYAIML_CHECK(q.flags() & py::array::c_style, op, ": q must be C-contiguous");
  PYAIML_CHECK((scale.flags() & py::array::c_style) && is_aligned(scale), op, ": scale must be C-contiguous and aligned");
  auto sx = elem_strides(x, op, "x");
  PYAIML_CHECK(sx[1] == 1, op, ": x's rows must be contiguous. Received strides ", sx[0], ", ", sx[1]);
  return sx[0];
}

}  // namespace

void register_gemm(py::module_& m) {
  m.def(
      "gemm",
      [](py::array a, py::array b, py::object bias, bool relu, bool naive, bool check_finite) -> py::object {
        const char* op = "matmul";
        require_dtype<float>(a, op, "a");
        require_dtype<float>(b, op, "b");
        require_ndim(a, 3, op, "a");
        require_ndim(b, 3, op, "b");
        a = aligned(a);  // a copy only when the data is not 4-byte aligned
        b = aligned(b);
        const int64_t Bt = a.shape(0), M = a.shape(1), K = a.shape(2), N = b.shape(2);
        PYAIML_CHECK(b.shape(0) == Bt, op, ": a and b must have the same batch size. Received ", shape_str(a),
                     " and ", shape_str(b));
        PYAIML_CHECK(b.shape(1) == K, op, ": inner dimensions must match (a is (.., M, K), b is (.., K, N)). Received ",
                     shape_str(a), " and ", shape_str(b));
        auto sa = elem_strides(a, op, "a");
        auto sb = elem_strides(b, op, "b");
        py::array_t<float> bias_arr;
        const float* bias_p = optional_vector(bias, N, op, "bias", bias_arr);
        py::array_t<float> c = new_aligned_array<float>({Bt, M, N});
        int nonfinite = 0;
        const float* pa = static_cast<const float*>(a.data());
        const float* pb = static_cast<const float*>(b.data());
        float* pc = c.mutable_data();
        // A few rows against a B whose rows are contiguous (a weight stored (in, out)): the
        // streaming GEMV reads B once without packing it (gemv.h).
        if (!naive && !relu && Bt == 1 && M <= kGemvMaxRows && sa[2] == 1 && sb[2] == 1) {
          {
            py::gil_scoped_release nogil;
            GemvArgs g;
            g.M = M;
            g.K = K;
            g.N = N;
            g.x = pa;
            g.ldx = sa[1];
            g.w = pb;
            g.ldw = sb[1];
            g.bias = bias_p;
            g.y = pc;
            g.ldy = N;
            gemv_kernels().gemv_f32(g);
            if (check_finite)  // the bias was checked finite by the caller, so a NaN/inf here is the product's
              for (int64_t i = 0; i < M * N && !nonfinite; ++i) nonfinite = !std::isfinite(pc[i]);
          }
          if (check_finite) return py::make_tuple(c, nonfinite == 0);
          return std::move(c);
        }
        {
          py::gil_scoped_release nogil;
          const GemmKernels& k = gemm_kernels();
          for (int64_t t = 0; t < Bt; ++t) {
            GemmArgs g;
            g.M = M;
            g.N = N;
            g.K = K;
            g.A = pa + t * sa[0];
            g.rsa = sa[1];
            g.csa = sa[2];
            g.B = pb + t * sb[0];
            g.rsb = sb[1];
            g.csb = sb[2];
            g.C = pc + t * M * N;
            g.ldc = N;
            g.beta = 0.f;
            g.bias_n = bias_p;
            g.relu = relu;
            if (check_finite) g.nonfinite = &nonfinite;
            (naive ? k.sgemm_naive : k.sgemm)(g);
          }
        }
        if (check_finite) return py::make_tuple(c, nonfinite == 0);
        return std::move(c);
      },
      py::arg("a"), py::arg("b"), py::arg("bias") = py::none(), py::arg("relu") = false, py::arg("naive") = false,
      py::arg("check_finite") = false);

  m.def(
      "linear_q8",
      [](py::array x, py::array q, py::array scale, py::object bias) -> py::array {
        const char* op = "linear_q8";
        const int64_t ldx = q8_common_checks(op, x, q, scale, 2);
        const int64_t M = x.shape(0), K = x.shape(1), N = q.shape(1);
        PYAIML_CHECK(q.shape(0) == K, op, ": q must be (in, out) with in = x's last dimension. Received x ", shape_str(x),
                     ", q ", shape_str(q));
        PYAIML_CHECK(scale.shape(0) == K / kQ8Block && scale.shape(1) == N, op, ": scale must have shape (", K / kQ8Block,
                     ", ", N, "). Received ", shape_str(scale));
        py::array_t<float> bias_arr;
        const float* bias_p = optional_vector(bias, N, op, "bias", bias_arr);
        py::array_t<float> y = new_aligned_array<float>({M, N});
        GemvArgs g;
        g.M = M;
        g.K = K;
        g.N = N;
        g.x = static_cast<const float*>(x.data());
        g.ldx = ldx;
        g.q = static_cast<const int8_t*>(q.data());
        g.s = static_cast<const uint16_t*>(scale.data());
        g.ldw = N;
        g.bias = bias_p;
        g.y = y.mutable_data();
        g.ldy = N;
        {
          py::gil_scoped_release nogil;
          gemv_kernels().gemm_q8(g);
        }
        return std::move(y);
      },
      py::arg("x"), py::arg("q"), py::arg("scale"), py::arg("bias") = py::none());

  // linear_q8_packed (float32 activations) and linear_w8a8_packed (activations quantized per
  // row and 32-block, gemv.cpp): the same panels, the same checks
  auto q8_packed = [](const char* op, bool w8a8) {
    return [op, w8a8](py::array x, py::array q, py::array scale, int64_t n, py::object bias) -> py::array {
      const int64_t ldx = q8_common_checks(op, x, q, scale, 3);
      const int64_t M = x.shape(0), K = x.shape(1), P = q.shape(0);
      PYAIML_CHECK(q.shape(1) == K && q.shape(2) == kQ8Panel, op, ": q must be packed (panels, in, ", kQ8Panel,
                   ") with in = x's last dimension. Received x ", shape_str(x), ", q ", shape_str(q));
      PYAIML_CHECK(n > (P - 1) * kQ8Panel && n <= P * kQ8Panel, op, ": n must lie in the last panel of q (", P,
                   " panels). Received ", n);
      PYAIML_CHECK(scale.shape(0) == P && scale.shape(1) == K / kQ8Block && scale.shape(2) == kQ8Panel, op,
                   ": scale must have shape (", P, ", ", K / kQ8Block, ", ", kQ8Panel, "). Received ", shape_str(scale));
      py::array_t<float> bias_arr;
      const float* bias_p = optional_vector(bias, n, op, "bias", bias_arr);
      py::array_t<float> y = new_aligned_array<float>({M, n});
      const float* px = static_cast<const float*>(x.data());
      const int8_t* pq = static_cast<const int8_t*>(q.data());
      const uint16_t* ps = static_cast<const uint16_t*>(scale.data());
      float* py_ = y.mutable_data();
      {
        py::gil_scoped_release nogil;
        linear_q8_panels(px, ldx, M, K, pq, ps, n, bias_p, py_, w8a8);
      }
      return std::move(y);
    };
  };
  m.def("linear_q8_packed", q8_packed("linear_q8_packed", false), py::arg("x"), py::arg("q"), py::arg("scale"),
        py::arg("n"), py::arg("bias") = py::none());
  m.def("linear_w8a8_packed", q8_packed("linear_w8a8_packed", true), py::arg("x"), py::arg("q"), py::arg("scale"),
        py::arg("n"), py::arg("bias") = py::none());

  m.def(
      "linear_f32_packed",
      [](py::array x, py::array w, int64_t n, py::object bias) -> py::array {
        const char* op = "linear_f32_packed";
        require_dtype<float>(x, op, "x");
        require_dtype<float>(w, op, "w");
        require_ndim(x, 2, op, "x");
        require_ndim(w, 3, op, "w");
        x = aligned(x);
        auto sx = elem_strides(x, op, "x");
        PYAIML_CHECK(sx[1] == 1 || x.shape(1) <= 1, op, ": x's rows must be contiguous. Received strides ", sx[0],
                     ", ", sx[1]);
        PYAIML_CHECK((w.flags() & py::array::c_style) && is_aligned(w), op, ": w must be C-contiguous and aligned");
        const int64_t M = x.shape(0), K = x.shape(1), P = w.shape(0);
        PYAIML_CHECK(w.shape(1) == K && w.shape(2) == kPanel, op, ": w must be packed (panels, in, ", kPanel,
                     ") with in = x's last dimension. Received x ", shape_str(x), ", w ", shape_str(w));
        PYAIML_CHECK(n > (P - 1) * kPanel && n <= P * kPanel, op, ": n must lie in the last panel of w (", P,
                     " panels). Received ", n);
        py::array_t<float> bias_arr;
        const float* bias_p = optional_vector(bias, n, op, "bias", bias_arr);
        py::array_t<float> y = new_aligned_array<float>({M, n});
        const float* px = static_cast<const float*>(x.data());
        const float* pw = static_cast<const float*>(w.data());
        {
          py::gil_scoped_release nogil;
          linear_packed(px, sx[0], M, K, pw, n, bias_p, y.mutable_data());
        }
        return std::move(y);
      },
      py::arg("x"), py::arg("w"), py::arg("n"), py::arg("bias") = py::none());
}

}  // namespace pyaiml
