// bindings/sequential.cpp: _C.SequentialPlan, Sequential's native inference plan
// (pyaiml/keras/models.py): a chain of convolutions (+ bias, ReLU), max pools and dense layers
// (+ bias, ReLU or softmax) for one input shape, run in one call with the GIL released.
// Between steps the activations live in two per-thread buffers; only the result is a new
// array. Each step calls the kernel its op calls (conv2d_forward, the pool forward, the
// GEMV or SGEMM with gemm's own dispatch), so the results are those of the layer-by-layer path
// but for the softmax (act.h's softmax_rows, a few ulps from NumPy's).
// At batch 1 the mission CNN's layers spent about as long in Python between kernels as in
// the kernels themselves.
//
// SequentialPlan(in_shape, steps, out_shape); steps are tuples of ints:
//   (0, N, H, W, C, OC, KH, KW, sh, sw, pt, pb, pl, pr, dh, dw, G, cl, relu, bias)  conv
//   (1, N, H, W, C, kh, kw, sh, sw, ph, pw, cl)                                     max pool
//   (2, M, K, N, relu, bias, softmax)                                              dense
// run(x, weights): x float32 C-contiguous of in_shape; weights the conv kernels (OC, C/G,
// KH, KW) or (OC, C/G, KW), conv biases (OC,), dense kernels (K, N) and biases (N,) in step
// order, float32 C-contiguous. Everything is checked: the plan's sizes chain and stay within
// kMaxExtent, and each call's arrays match them, so a bad plan or array raises ValueError.
// Tests: tests/test_keras_predict_plan.py.
#include <cstdlib>
#include <cstring>
#include <memory>

#include "bindings/common.h"
#include "common/parallel.h"
#include "cpu/act.h"
#include "cpu/conv.h"
#include "cpu/gemm.h"
#include "cpu/gemv.h"
#include "cpu/pool.h"

namespace pyaiml {
namespace {

constexpr const char* kOp = "SequentialPlan";

struct Step {
  int kind = 0;  // 0 conv, 1 pool, 2 dense
  ConvShape cs{};
  PoolShape ps{};
  int64_t M = 0, K = 0, N = 0;
  bool relu = false, bias = false, softmax = false;
  int64_t in = 0, out = 0;  // elements
};

struct AlignedBuf {
  float* p = nullptr;
  int64_t n = 0;
  ~AlignedBuf() { std::free(p); }
  void release() {
    std::free(p);
    p = nullptr;
    n = 0;
  }
  float* get(int64_t want) {
    if (want > n) {
      std::free(p);
      const size_t bytes = (static_cast<size_t>(want) * sizeof(float) + 63) / 64 * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
      n = static_cast<int64_t>(bytes / sizeof(float));
    }
    return p;
  }
};
thread_local AlignedBuf t_ping, t_pong;

int64_t get_int(const py::tuple& t, size_t i) {
  try {
    return t[i].cast<int64_t>();
  } catch (const py::cast_error&) {
    fail(kOp, ": step values must be integers. Received ", py::repr(t[i]).cast<std::string>(), " at position ", i);
  }
}

void check_dims(std::initializer_list<int64_t> v, int64_t lo, const char* what) {
  for (int64_t e : v)
    PYAIML_CHECK(e >= lo && e <= kMaxExtent, kOp, ": ", what, " must be in [", lo, ", ", kMaxExtent, "]. Received ", e);
}

int64_t elems(std::initializer_list<int64_t> v) {
  int64_t n = 1;
  for (int64_t e : v) {
    PYAIML_CHECK(!__builtin_mul_overflow(n, e, &n) && n <= kMaxPaddedElements, kOp, ": a step is too large");
  }
  return n;
}

class SequentialPlan {
 public:
  SequentialPlan(std::vector<int64_t> in_shape, const py::list& steps, std::vector<int64_t> out_shape)
      : in_shape_(std::move(in_shape)), out_shape_(std::move(out_shape)) {
    PYAIML_CHECK(!in_shape_.empty() && !out_shape_.empty() && py::len(steps) > 0, kOp,
                 ": needs an input shape, steps and an output shape");
    int64_t cur = 1, out_n = 1;
    for (int64_t d : in_shape_) {
      check_dims({d}, 1, "input sizes");
      cur = elems({cur, d});
    }
    in_n_ = cur;
    for (int64_t d : out_shape_) {
      check_dims({d}, 1, "output sizes");
      out_n = elems({out_n, d});
    }
    for (const auto& h : steps) {
      const py::tuple t = h.cast<py::tuple>();
      PYAIML_CHECK(py::len(t) >= 1, kOp, ": empty step");
      Step s;
      s.kind = static_cast<int>(get_int(t, 0));
      if (s.kind == 0) {
        PYAIML_CHECK(py::len(t) == 20, kOp, ": a conv step has 20 values. Received ", py::len(t));
        ConvShape& c = s.cs;
        c.N = get_int(t, 1); c.H = get_int(t, 2); c.W = get_int(t, 3); c.C = get_int(t, 4); c.OC = get_int(t, 5);
        c.KH = get_int(t, 6); c.KW = get_int(t, 7); c.sh = get_int(t, 8); c.sw = get_int(t, 9);
        c.pt = get_int(t, 10); const int64_t pb = get_int(t, 11); c.pl = get_int(t, 12); const int64_t pr = get_int(t, 13);
        c.dh = get_int(t, 14); c.dw = get_int(t, 15); c.G = get_int(t, 16); c.cl = get_int(t, 17) != 0;
        s.relu = get_int(t, 18) != 0; s.bias = get_int(t, 19) != 0;
        check_dims({c.N, c.H, c.W, c.C, c.OC, c.KH, c.KW, c.sh, c.sw, c.dh, c.dw, c.G}, 1, "conv sizes");
        check_dims({c.pt, pb, c.pl, pr}, 0, "conv padding");
        PYAIML_CHECK(c.C % c.G == 0 && c.OC % c.G == 0, kOp, ": groups must divide the channels");
        const int64_t eh = c.dh * (c.KH - 1) + 1, ew = c.dw * (c.KW - 1) + 1;
        const int64_t fh = c.H + c.pt + pb, fw = c.W + c.pl + pr;
        check_dims({eh, ew, fh, fw}, 1, "padded and dilated sizes");
        PYAIML_CHECK(fh >= eh && fw >= ew, kOp, ": the kernel must fit in the padded input");
        c.OH = (fh - eh) / c.sh + 1;
        c.OW = (fw - ew) / c.sw + 1;
        elems({c.N, c.C, fh, fw});
        s.in = elems({c.N, c.H, c.W, c.C});
        s.out = elems({c.N, c.OH, c.OW, c.OC});
      } else if (s.kind == 1) {
        PYAIML_CHECK(py::len(t) == 12, kOp, ": a pool step has 12 values. Received ", py::len(t));
        PoolShape& p = s.ps;
        p.N = get_int(t, 1); p.H = get_int(t, 2); p.W = get_int(t, 3); p.C = get_int(t, 4);
        p.KH = get_int(t, 5); p.KW = get_int(t, 6); p.sh = get_int(t, 7); p.sw = get_int(t, 8);
        p.ph = get_int(t, 9); p.pw = get_int(t, 10); p.cl = get_int(t, 11) != 0;
        check_dims({p.N, p.H, p.W, p.C, p.KH, p.KW, p.sh, p.sw}, 1, "pool sizes");
        check_dims({p.ph, p.pw}, 0, "pool padding");
        PYAIML_CHECK(2 * p.ph <= p.KH && 2 * p.pw <= p.KW, kOp, ": pool padding must be at most half the kernel");
        check_dims({p.H + 2 * p.ph, p.W + 2 * p.pw}, 1, "padded pool sizes");
        PYAIML_CHECK(p.H + 2 * p.ph >= p.KH && p.W + 2 * p.pw >= p.KW, kOp, ": the pool window must fit");
        p.OH = (p.H + 2 * p.ph - p.KH) / p.sh + 1;
        p.OW = (p.W + 2 * p.pw - p.KW) / p.sw + 1;
        s.in = elems({p.N, p.H, p.W, p.C});
        s.out = elems({p.N, p.OH, p.OW, p.C});
      } else if (s.kind == 2) {
        PYAIML_CHECK(py::len(t) == 7, kOp, ": a dense step has 7 values. Received ", py::len(t));
        s.M = get_int(t, 1); s.K = get_int(t, 2); s.N = get_int(t, 3);
        s.relu = get_int(t, 4) != 0; s.bias = get_int(t, 5) != 0; s.softmax = get_int(t, 6) != 0;
        check_dims({s.M, s.K, s.N}, 1, "dense sizes");
        PYAIML_CHECK(!(s.relu && s.softmax), kOp, ": a dense step has one activation");
        s.in = elems({s.M, s.K});
        s.out = elems({s.M, s.N});
      } else {
        fail(kOp, ": unknown step kind ", s.kind);
      }
      const int64_t batch = s.kind == 0 ? s.cs.N : s.kind == 1 ? s.ps.N : s.M;
      same_batch_ = same_batch_ && batch == in_shape_[0];
      PYAIML_CHECK(s.in == cur, kOp, ": step ", steps_.size(), " takes ", s.in, " values but receives ", cur);
      cur = s.out;
      max_ = std::max(max_, s.out);
      steps_.push_back(s);
    }
    PYAIML_CHECK(cur == out_n, kOp, ": the last step gives ", cur, " values, the output shape holds ", out_n);
    out_n_ = out_n;
    same_batch_ = same_batch_ && out_shape_[0] == in_shape_[0];
  }

  py::array_t<float> run(const py::array& x_, const py::list& weights) const {
    const py::array x = require_contiguous<float>(x_, kOp, "x");
    bool same = x.ndim() == static_cast<py::ssize_t>(in_shape_.size());
    for (size_t i = 0; same && i < in_shape_.size(); ++i) same = x.shape(i) == in_shape_[i];
    PYAIML_CHECK(same, kOp, ": x must have the plan's shape. Received ", shape_str(x));
    // the weights: checked and their pointers taken before the GIL is released
    std::vector<const float*> wp;
    std::vector<py::array> keep;
    size_t wi = 0;
    auto take = [&](int64_t n, const char* what) {
      PYAIML_CHECK(wi < py::len(weights), kOp, ": missing ", what, " (weight ", wi, ")");
      py::array a = require_contiguous<float>(weights[wi].cast<py::array>(), kOp, what);
      PYAIML_CHECK(a.size() == n, kOp, ": ", what, " (weight ", wi, ") must have ", n, " values. Received shape ",
                   shape_str(a));
      ++wi;
      wp.push_back(static_cast<const float*>(a.data()));
      keep.push_back(std::move(a));
    };
    for (const Step& s : steps_) {
      if (s.kind == 0) {
        take(elems({s.cs.OC, s.cs.C / s.cs.G, s.cs.KH, s.cs.KW}), "conv kernel");
        if (s.bias) take(s.cs.OC, "conv bias");
      } else if (s.kind == 2) {
        take(elems({s.K, s.N}), "dense kernel");
        if (s.bias) take(s.N, "dense bias");
      }
    }
    PYAIML_CHECK(wi == py::len(weights), kOp, ": ", py::len(weights), " weights for ", wi, " expected");
    std::vector<py::ssize_t> oshape(out_shape_.begin(), out_shape_.end());
    py::array_t<float> y = new_aligned_array<float>(oshape);
    const float* xp = static_cast<const float*>(x.data());
    float* yp = y.mutable_data();
    {
      py::gil_scoped_release nogil;
      const int64_t N = in_shape_[0], nth = get_num_threads();
      if (same_batch_ && ((nth > 1 && N >= 2 * nth) || (nth == 1 && N > kChunk))) {
        // A batch of several images per thread (or more than a chunk on one thread): each
        // thread runs the whole chain on chunks of kChunk images, its kernels serial inside
        // the region (parallel.h), the activations in its own buffers (L2-sized at these
        // chunks) and no pool hand-off between layers. The
        // kernels' results do not depend on how the batch is split, so neither does y. The
        // mission CNN, 2 threads, builds alternated: batch 256 ~12.2-14.8 -> ~9.5-10.4 ms per
        // call, batch 32 ~1.37-2.05 -> ~1.33-1.37 ms; chunks of 8 were no better, of 2 worse.
        const int64_t chunks = (N + kChunk - 1) / kChunk;
        parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
          for (int64_t c = cb; c < ce; ++c) {
            const int64_t n0 = c * kChunk, n = std::min(kChunk, N - n0);
            chain(n, xp + n0 * (in_n_ / N), wp, yp + n0 * (out_n_ / N));
          }
        });
      } else {
        chain(N, xp, wp, yp);
      }
    }
    return y;
  }

 private:
  // The steps on n images (the plan's batch, or a chunk of it): x in, y out.
  void chain(int64_t n, const float* x, const std::vector<const float*>& wp, float* y) const {
    const int64_t N = in_shape_[0];
    const int64_t need = max_ / N * n;
    float* bufs[2] = {t_ping.get(need), t_pong.get(need)};
    const float* in = x;
    size_t w = 0;
    for (size_t i = 0; i < steps_.size(); ++i) {
      Step s = steps_[i];
      if (n != N) {
        s.cs.N = s.ps.N = s.M = n;
      }
      float* out = i + 1 == steps_.size() ? y : bufs[i % 2];
      if (s.kind == 0) {
        const float* k = wp[w++];
        const float* b = s.bias ? wp[w++] : nullptr;
        conv_kernels().conv2d_forward(s.cs, in, k, b, s.relu, out);
      } else if (s.kind == 1) {
        pool_kernels().forward(s.ps, in, out, nullptr, nullptr, false);
      } else {
        const float* k = wp[w++];
        const float* b = s.bias ? wp[w++] : nullptr;
        dense(s, in, k, b, out);
        if (s.softmax) act_kernels().softmax_rows(out, out, s.M, s.N);
      }
      in = out;
    }
    if (need > kKeepFloats) {  // a one-off large call does not keep its buffers
      t_ping.release();
      t_pong.release();
    }
  }

  // gemm's dispatch (bindings/gemm.cpp) for a contiguous x (M, K) and kernel (K, N): the
  // streaming GEMV for a few rows without ReLU, else SGEMM with the bias and ReLU in its
  // epilogue; the same calls, so the same bits.
  static void dense(const Step& s, const float* x, const float* k, const float* b, float* y) {
    if (!s.relu && s.M <= kGemvMaxRows) {
      GemvArgs g;
      g.M = s.M; g.K = s.K; g.N = s.N;
      g.x = x; g.ldx = s.K;
      g.w = k; g.ldw = s.N;
      g.bias = b;
      g.y = y; g.ldy = s.N;
      gemv_kernels().gemv_f32(g);
      return;
    }
    GemmArgs g;
    g.M = s.M; g.N = s.N; g.K = s.K;
    g.A = x; g.rsa = s.K; g.csa = 1;
    g.B = k; g.rsb = s.N; g.csb = 1;
    g.C = y; g.ldc = s.N;
    g.beta = 0.f;
    g.bias_n = b;
    g.relu = s.relu;
    gemm_kernels().sgemm(g);
  }

  static constexpr int64_t kChunk = 4;
  static constexpr int64_t kKeepFloats = int64_t(1) << 24;  // 64 MiB per buffer kept between calls
  std::vector<int64_t> in_shape_, out_shape_;
  std::vector<Step> steps_;
  int64_t max_ = 0, in_n_ = 0, out_n_ = 0;
  bool same_batch_ = true;  // every step's leading size is the batch: the batch can be split
};

}  // namespace

void register_sequential(py::module_& m) {
  py::class_<SequentialPlan>(m, "SequentialPlan")
      .def(py::init<std::vector<int64_t>, const py::list&, std::vector<int64_t>>(), py::arg("in_shape"),
           py::arg("steps"), py::arg("out_shape"))
      .def("run", &SequentialPlan::run, py::arg("x"), py::arg("weights"));
}

}  // namespace pyaiml
