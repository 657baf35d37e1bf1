// bindings/attention.cpp: _C.attention_forward / _C.attention_backward (float32, 4-D).
// q (N, Hq, Lq, D), k (N, Hk, Lk, D), v (N, Hk, Lk, Dv) C-contiguous, or k/v views whose rows
// are contiguous and whose (N, Hk) blocks are evenly spaced (a KV cache sliced along Lk, read
// in place); Hq a multiple of Hk;
// mask None or a 4-D (N, Hq, Lq, Lk) bool/float32 array with any strides (0 = broadcast).
// pyaiml/ops/attention.py reshapes the public (..., L, D) arguments into this form.
// naive=True runs the row-by-row kernels (masked pairs skipped, NaN-safe). Arrays whose
// data is not aligned to their item size are copied first (bindings/common.h).
// _C.attention_forward_rows: batch row n of q attends over its own keys[n] / values[n]
// (3-D (Hk, L_n, D) arrays of any lengths, e.g. each sequence's KV cache read in place),
// no mask, not causal; each row runs the same kernel call as a one-row attention_forward on
// its own arrays (same bits), the rows spread over the thread pool.
#include "bindings/common.h"
#include "common/parallel.h"
#include "cpu/attention.h"

namespace pyaiml {

namespace {

struct Prepared {
  AttnArgs a;
  py::array_t<float> q;
  py::array k, v;
  py::array mask;
};

py::array_t<float> f32_4d(const py::array& x, const char* op, const char* name) {
  auto c = require_contiguous<float>(x, op, name);
  require_ndim(c, 4, op, name);
  return c;
}

// k or v read in place when its rows are contiguous and its (N, H) blocks evenly spaced (a
// KV cache (N, H, Tmax, D) sliced to [:, :, :L]); *head_stride = their spacing in elements.
// Anything else must be C-contiguous (head_stride 0).
py::array kv_4d(const py::array& x, const char* op, const char* name, int64_t* head_stride) {
  *head_stride = 0;
  if (x.ndim() == 4 && x.dtype().is(py::dtype::of<float>()) && is_aligned(x) && x.shape(2) > 0 && x.shape(3) > 0) {
    const int64_t it = sizeof(float), s0 = x.strides(0) / it, s1 = x.strides(1) / it;
    const bool rows = x.strides(3) == it && x.strides(2) == x.shape(3) * it && x.strides(0) % it == 0 &&
                      x.strides(1) % it == 0 && s0 >= 0 && s1 >= 0;
    if (rows && !(x.flags() & py::array::c_style)) {
      if (x.shape(0) == 1) {
        *head_stride = s1;
        return x;
      }
      if (x.shape(1) == 1 || s0 == x.shape(1) * s1) {
        *head_stride = x.shape(1) == 1 ? s0 : s1;
        return x;
      }
    }
  }
  return f32_4d(x, op, name);
}

// One row's keys or values for attention_forward_rows: a 3-D float32 (H, L, D) array whose
// rows are contiguous and whose heads are evenly spaced (a cache (H, Tmax, D) sliced to
// [:, :L]) is read in place (*head_stride = the spacing); anything else is copied to a C-contiguous
// float32 array (float64 is converted; other dtypes are refused).
py::array kv_3d(const py::handle& h, const char* op, const std::string& name, int64_t* head_stride) {
  *head_stride = 0;
  if (!py::isinstance<py::array>(h))
    throw py::type_error(std::string(op) + ": " + name + " must be a NumPy array. Received " +
                         std::string(py::str(py::type::of(h).attr("__name__"))));
  auto x = py::reinterpret_borrow<py::array>(h);
  require_ndim(x, 3, op, name.c_str());
  if (x.dtype().is(py::dtype::of<float>()) && is_aligned(x) && x.shape(1) > 0 && x.shape(2) > 0 &&
      x.strides(2) == static_cast<py::ssize_t>(sizeof(float)) &&
      x.strides(1) == x.shape(2) * static_cast<py::ssize_t>(sizeof(float)) && x.strides(0) >= 0 &&
      x.strides(0) % static_cast<py::ssize_t>(sizeof(float)) == 0 && !(x.flags() & py::array::c_style)) {
    *head_stride = x.strides(0) / static_cast<py::ssize_t>(sizeof(float));
    return x;
  }
  if (!(x.dtype().is(py::dtype::of<float>()) || x.dtype().is(py::dtype::of<double>())))
    throw py::type_error(std::string(op) + ": " + name + " must have dtype float32 or float64. Received " +
                         dtype_str(x));
  return py::module_::import("numpy").attr("ascontiguousarray")(x, "float32").cast<py::array>();
}

Prepared prepare(const char* op, py::array q, py::array k, py::array v, py::object mask, bool causal, double scale) {
  Prepared p;
  p.q = f32_4d(q, op, "q");
  p.k = kv_4d(k, op, "k", &p.a.k_head_stride);
  p.v = kv_4d(v, op, "v", &p.a.v_head_stride);
  AttnArgs& a = p.a;
  a.N = p.q.shape(0);
  a.Hq = p.q.shape(1);
  a.Lq = p.q.shape(2);
  a.D = p.q.shape(3);
  a.Hk = p.k.shape(1);
  a.Lk = p.k.shape(2);
  a.Dv = p.v.shape(3);
  PYAIML_CHECK(p.k.shape(0) == a.N && p.v.shape(0) == a.N, op, ": q, k, v must have the same batch size. Received ",
               shape_str(p.q), ", ", shape_str(p.k), ", ", shape_str(p.v));
  PYAIML_CHECK(a.Hk >= 1 && a.Hq % a.Hk == 0 && p.v.shape(1) == a.Hk, op,
               ": k and v must have the same number of heads, dividing q's. Received ", shape_str(p.q), ", ",
               shape_str(p.k), ", ", shape_str(p.v));
  PYAIML_CHECK(p.k.shape(3) == a.D, op, ": q and k must have the same head dim. Received ", shape_str(p.q), " and ",
               shape_str(p.k));
  PYAIML_CHECK(p.v.shape(2) == a.Lk, op, ": k and v must have the same length. Received ", shape_str(p.k), " and ",
               shape_str(p.v));
  PYAIML_CHECK(a.D >= 1 && a.Dv >= 1, op, ": head dims must be >= 1. Received ", shape_str(p.q), ", ",
               shape_str(p.v));
  a.q = p.q.data();
  a.k = static_cast<const float*>(p.k.data());
  a.v = static_cast<const float*>(p.v.data());
  a.causal = causal;
  a.scale = static_cast<float>(scale);
  if (!mask.is_none()) {
    p.mask = aligned(mask.cast<py::array>());
    PYAIML_CHECK(p.mask.ndim() == 4 && p.mask.shape(0) == a.N && p.mask.shape(1) == a.Hq && p.mask.shape(2) == a.Lq &&
                     p.mask.shape(3) == a.Lk,
                 op, ": attn_mask must have shape (", a.N, ", ", a.Hq, ", ", a.Lq, ", ", a.Lk, "). Received ",
                 shape_str(p.mask));
    if (p.mask.dtype().is(py::dtype::of<bool>())) {
      a.mask_kind = 1;
    } else if (p.mask.dtype().is(py::dtype::of<float>())) {
      a.mask_kind = 2;
    } else {
      fail(op, ": attn_mask must have dtype bool or float32. Received ", dtype_str(p.mask));
    }
    auto s = elem_strides(p.mask, op, "attn_mask");
    for (int d = 0; d < 4; ++d) a.ms[d] = s[d];
    a.mask = p.mask.data();
  }
  return p;
}

}  // namespace

void register_attention(py::module_& m) {
  m.def(
      "attention_forward",
      [](py::array q, py::array k, py::array v, py::object mask, bool causal, double scale, bool naive) {
        Prepared p = prepare("scaled_dot_product_attention", q, k, v, mask, causal, scale);
        AttnArgs& a = p.a;
        py::array_t<float> out = new_aligned_array<float>({a.N, a.Hq, a.Lq, a.Dv});
        py::array_t<float> lse = new_aligned_array<float>({a.N, a.Hq, a.Lq});
        a.out = out.mutable_data();
        a.lse = lse.mutable_data();
        {
          py::gil_scoped_release nogil;
          const AttentionKernels& kt = attention_kernels();
          if (naive || !kt.forward(a)) kt.forward_naive(a);
        }
        return py::make_tuple(out, lse);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(), py::arg("causal") = false,
      py::arg("scale") = 1.0, py::arg("naive") = false);

  m.def(
      "attention_forward_rows",
      [](py::array q, py::sequence keys, py::sequence values, double scale) {
        const char* op = "attention_rows";
        auto qc = f32_4d(q, op, "q");
        const int64_t N = qc.shape(0), Hq = qc.shape(1), Lq = qc.shape(2), D = qc.shape(3);
        PYAIML_CHECK(static_cast<int64_t>(py::len(keys)) == N && static_cast<int64_t>(py::len(values)) == N, op,
                     ": keys and values must hold one array per batch row of q (", N, "). Received ",
                     py::len(keys), " and ", py::len(values));
        std::vector<py::array> keep;
        keep.reserve(2 * N);
        std::vector<AttnArgs> rows(N);
        int64_t Dv = -1;
        for (int64_t n = 0; n < N; ++n) {
          AttnArgs& a = rows[n];
          const std::string kn = "keys[" + std::to_string(n) + "]", vn = "values[" + std::to_string(n) + "]";
          keep.push_back(kv_3d(keys[n], op, kn, &a.k_head_stride));
          py::array k = keep.back();
          keep.push_back(kv_3d(values[n], op, vn, &a.v_head_stride));
          py::array v = keep.back();
          a.N = 1;
          a.Hq = Hq;
          a.Lq = Lq;
          a.D = D;
          a.Hk = k.shape(0);
          a.Lk = k.shape(1);
          a.Dv = v.shape(2);
          PYAIML_CHECK(a.Hk >= 1 && Hq % a.Hk == 0 && v.shape(0) == a.Hk, op, ": ", kn, " and ", vn,
                       " must have the same number of heads, dividing q's (", Hq, "). Received ", shape_str(k),
                       " and ", shape_str(v));
          PYAIML_CHECK(k.shape(2) == D, op, ": ", kn, " must have q's head dim ", D, ". Received ", shape_str(k));
          PYAIML_CHECK(v.shape(1) == a.Lk, op, ": ", kn, " and ", vn, " must have the same length. Received ",
                       shape_str(k), " and ", shape_str(v));
          PYAIML_CHECK(a.Dv >= 1 && (Dv < 0 || a.Dv == Dv), op, ": every values[i] must have the same head dim "
                       "(>= 1). Received ", shape_str(v), (Dv < 0 ? "" : " after a head dim of "),
                       (Dv < 0 ? std::string() : std::to_string(Dv)));
          Dv = a.Dv;
          a.q = qc.data() + n * Hq * Lq * D;
          a.k = static_cast<const float*>(k.data());
          a.v = static_cast<const float*>(v.data());
          a.scale = static_cast<float>(scale);
        }
        PYAIML_CHECK(D >= 1, op, ": q's head dim must be >= 1. Received ", shape_str(qc));
        py::array_t<float> out = new_aligned_array<float>({N, Hq, Lq, std::max<int64_t>(Dv, 0)});
        py::array_t<float> lse = new_aligned_array<float>({N, Hq, Lq});
        for (int64_t n = 0; n < N; ++n) {
          rows[n].out = out.mutable_data() + n * Hq * Lq * Dv;
          rows[n].lse = lse.mutable_data() + n * Hq * Lq;
        }
        {
          py::gil_scoped_release nogil;
          const AttentionKernels& kt = attention_kernels();
          // One row per task: inside the pool a row's own parallel_for runs serially, and
          // a kernel's result does not depend on how it was split.
          parallel_for(N, 1, [&](int64_t b, int64_t e) {
            for (int64_t n = b; n < e; ++n)
              if (!kt.forward(rows[n])) kt.forward_naive(rows[n]);
          });
        }
        return py::make_tuple(out, lse);
      },
      py::arg("q"), py::arg("keys"), py::arg("values"), py::arg("scale") = 1.0);

  m.def(
      "attention_backward",
      [](py::array dout, py::array q, py::array k, py::array v, py::object mask, bool causal, double scale,
         py::object out, py::object lse, bool naive) {
        const char* op = "scaled_dot_product_attention_backward";
        Prepared p = prepare(op, q, k, v, mask, causal, scale);
        AttnArgs& a = p.a;
        auto g = f32_4d(dout, op, "grad_out");
        PYAIML_CHECK(g.shape(0) == a.N && g.shape(1) == a.Hq && g.shape(2) == a.Lq && g.shape(3) == a.Dv, op,
                     ": grad_out must have shape (", a.N, ", ", a.Hq, ", ", a.Lq, ", ", a.Dv, "). Received ",
                     shape_str(g));
        a.dout = g.data();
        py::array_t<float> o_arr, l_arr;
        if (!naive) {
          PYAIML_CHECK(!out.is_none() && !lse.is_none(), op, ": out and lse are required by the fast kernel");
          o_arr = f32_4d(out.cast<py::array>(), op, "out");
          l_arr = require_contiguous<float>(lse.cast<py::array>(), op, "lse");
          PYAIML_CHECK(o_arr.shape(0) == a.N && o_arr.shape(1) == a.Hq && o_arr.shape(2) == a.Lq &&
                           o_arr.shape(3) == a.Dv,
                       op, ": out must have shape (", a.N, ", ", a.Hq, ", ", a.Lq, ", ", a.Dv, "). Received ",
                       shape_str(o_arr));
          PYAIML_CHECK(l_arr.ndim() == 3 && l_arr.shape(0) == a.N && l_arr.shape(1) == a.Hq && l_arr.shape(2) == a.Lq,
                       op, ": lse must have shape (", a.N, ", ", a.Hq, ", ", a.Lq, "). Received ", shape_str(l_arr));
          a.out = const_cast<float*>(o_arr.data());
          a.lse = const_cast<float*>(l_arr.data());
        }
        py::array_t<float> dq = new_aligned_array<float>({a.N, a.Hq, a.Lq, a.D});
        py::array_t<float> dk = new_aligned_array<float>({a.N, a.Hk, a.Lk, a.D});
        py::array_t<float> dv = new_aligned_array<float>({a.N, a.Hk, a.Lk, a.Dv});
        a.dq = dq.mutable_data();
        a.dk = dk.mutable_data();
        a.dv = dv.mutable_data();
        {
          py::gil_scoped_release nogil;
          const AttentionKernels& kt = attention_kernels();
          if (naive || !kt.backward(a)) kt.backward_naive(a);
        }
        return py::make_tuple(dq, dk, dv);
      },
      py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(),
      py::arg("causal") = false, py::arg("scale") = 1.0, py::arg("out") = py::none(), py::arg("lse") = py::none(),
      py::arg("naive") = false);
}

}  // namespace pyaiml
