// bindings/hmm.cpp: _C.hmm_forward_backward (-> logprob, posteriors, xi, counts, start),
// _C.hmm_viterbi (log_startprob, log_transmat, ...); both take symbols= to read emission rows
// from a (M, K) table (categorical emissions), _C.hmm_loglik_diag,
// _C.hmm_loglik_full. float64, C-contiguous; sequences given by int64 offsets (S + 1,).
// Every precondition is checked here before the GIL is released (pyaiml/ops/hmm.py checks
// them first with friendlier messages; these checks keep direct _C calls from crashing).
#include <algorithm>

#include "bindings/common.h"
#include "cpu/hmm.h"

namespace pyaiml {

namespace {

void check_offsets(const py::array_t<int64_t>& off, int64_t N, const char* op) {
  require_ndim(off, 1, op, "offsets");
  const int64_t S = off.shape(0) - 1;
  PYAIML_CHECK(S >= 1, op, ": offsets must hold at least 2 entries (one sequence). Received shape ", shape_str(off));
  const int64_t* o = off.data();
  PYAIML_CHECK(o[0] == 0, op, ": offsets[0] must be 0. Received ", o[0]);
  for (int64_t s = 0; s < S; ++s)
    PYAIML_CHECK(o[s + 1] > o[s], op, ": sequence ", s, " must have at least one frame. Received offsets ", o[s],
                 " .. ", o[s + 1]);
  PYAIML_CHECK(o[S] == N, op, ": offsets must end at the number of frames ", N, ". Received ", o[S]);
}

struct Common {
  py::array_t<double> pi, A, lb;
  py::array_t<int64_t> off, sym;
  int64_t S, K, N, M = 0;
};

// framelogprob is (N, K), or with symbols (N,) a (M, K) table whose rows the symbols pick.
Common common(py::array startprob, py::array transmat, py::array logb, py::array offsets, py::object symbols,
              const char* op) {
  Common c;
  c.pi = require_contiguous<double>(startprob, op, "startprob");
  c.A = require_contiguous<double>(transmat, op, "transmat");
  c.lb = require_contiguous<double>(logb, op, "framelogprob");
  c.off = require_contiguous<int64_t>(offsets, op, "offsets");
  require_ndim(c.pi, 1, op, "startprob");
  require_ndim(c.A, 2, op, "transmat");
  require_ndim(c.lb, 2, op, "framelogprob");
  c.K = c.pi.shape(0);
  PYAIML_CHECK(c.K >= 1, op, ": startprob must have at least one state. Received shape ", shape_str(c.pi));
  PYAIML_CHECK(c.A.shape(0) == c.K && c.A.shape(1) == c.K, op, ": transmat must have shape (", c.K, ", ", c.K,
               "). Received ", shape_str(c.A));
  PYAIML_CHECK(c.lb.shape(1) == c.K, op, ": framelogprob must have shape (n, ", c.K, "). Received ",
               shape_str(c.lb));
  if (symbols.is_none()) {
    c.N = c.lb.shape(0);
  } else {
    c.sym = require_contiguous<int64_t>(symbols.cast<py::array>(), op, "symbols");
    require_ndim(c.sym, 1, op, "symbols");
    c.N = c.sym.shape(0);
    c.M = c.lb.shape(0);
    const int64_t* x = c.sym.data();
    int64_t lo = 0, hi = 0;  // one branch-free pass; the offending sample is looked up only on failure
    for (int64_t t = 0; t < c.N; ++t) {
      lo = std::min(lo, x[t]);
      hi = std::max(hi, x[t]);
    }
    if (lo < 0 || hi >= c.M)
      for (int64_t t = 0; t < c.N; ++t)
        PYAIML_CHECK(x[t] >= 0 && x[t] < c.M, op, ": symbols must be in [0, ", c.M, "). Received ", x[t],
                     " at sample ", t);
  }
  check_offsets(c.off, c.N, op);
  c.S = c.off.shape(0) - 1;
  return c;
}

}  // namespace

void register_hmm(py::module_& m) {
  m.def(
      "hmm_forward_backward",
      [](py::array startprob, py::array transmat, py::array logb, py::array offsets, bool log_space, bool want_post,
         bool want_xi, py::object symbols, bool want_counts, bool want_start, py::object obs) {
        const char* op = "hmm_forward_backward";
        Common c = common(startprob, transmat, logb, offsets, symbols, op);
        PYAIML_CHECK(!want_counts || c.M > 0, op, ": counts need symbols");
        py::array_t<double> xo;
        py::object psum = py::none(), osum = py::none(), osq = py::none();
        py::object counts = py::none(), start = py::none();
        py::array_t<double> lp(c.S);
        py::object post = py::none(), xi = py::none();
        HmmFbArgs a;
        a.S = c.S;
        a.K = c.K;
        a.N = c.N;
        a.offsets = c.off.data();
        a.startprob = c.pi.data();
        a.transmat = c.A.data();
        a.logb = c.lb.data();
        a.sym = c.M ? c.sym.data() : nullptr;
        a.n_symbols = c.M;
        a.log_space = log_space;
        a.logprob = lp.mutable_data();
        if (want_post) {
          py::array_t<double> p({c.N, c.K});
          a.post = p.mutable_data();
          post = p;
        }
        if (want_xi) {
          py::array_t<double> x({c.K, c.K});
          a.xi = x.mutable_data();
          xi = x;
        }
        if (want_counts) {
          py::array_t<double> x({c.M, c.K});
          a.counts = x.mutable_data();
          counts = x;
        }
        if (want_start) {
          py::array_t<double> x(c.K);
          a.start = x.mutable_data();
          start = x;
        }
        if (!obs.is_none()) {
          xo = require_contiguous<double>(obs.cast<py::array>(), op, "obs");
          require_ndim(xo, 2, op, "obs");
          PYAIML_CHECK(xo.shape(0) == c.N, op, ": obs must have one row per frame (", c.N, ", D). Received ",
                       shape_str(xo));
          const int64_t D = xo.shape(1);
          a.obs = xo.data();
          a.D = D;
          py::array_t<double> ps(c.K), s1({c.K, D}), s2({c.K, D});
          a.post_sum = ps.mutable_data();
          a.obs_sum = s1.mutable_data();
          a.obs_sq = s2.mutable_data();
          psum = ps;
          osum = s1;
          osq = s2;
        }
        {
          py::gil_scoped_release nogil;
          hmm_kernels().forward_backward(a);
        }
        return py::make_tuple(lp, post, xi, counts, start, psum, osum, osq);
      },
      py::arg("startprob"), py::arg("transmat"), py::arg("framelogprob"), py::arg("offsets"),
      py::arg("log_space") = false, py::arg("posteriors") = true, py::arg("xi") = true,
      py::arg("symbols") = py::none(), py::arg("counts") = false, py::arg("start") = false,
      py::arg("obs") = py::none());

  m.def(
      "hmm_viterbi",
      [](py::array startprob, py::array transmat, py::array logb, py::array offsets, py::object symbols) {
        const char* op = "hmm_viterbi";
        Common c = common(startprob, transmat, logb, offsets, symbols, op);
        py::array_t<double> lp(c.S);
        py::array_t<int64_t> states(c.N);
        HmmViterbiArgs a;
        a.S = c.S;
        a.K = c.K;
        a.N = c.N;
        a.offsets = c.off.data();
        a.log_startprob = c.pi.data();
        a.log_transmat = c.A.data();
        a.logb = c.lb.data();
        a.sym = c.M ? c.sym.data() : nullptr;
        a.n_symbols = c.M;
        a.logprob = lp.mutable_data();
        a.states = states.mutable_data();
        {
          py::gil_scoped_release nogil;
          hmm_kernels().viterbi(a);
        }
        return py::make_tuple(lp, states);
      },
      py::arg("log_startprob"), py::arg("log_transmat"), py::arg("framelogprob"), py::arg("offsets"),
      py::arg("symbols") = py::none());

  m.def(
      "hmm_loglik_gaussian",
      [](py::array X, py::array means, py::array prec, py::array cst) {
        // prec (K, D): diagonal precisions; prec (K, D, D): lower-triangular precision factors.
        const char* op = "hmm_loglik_gaussian";
        auto x = require_contiguous<double>(X, op, "X");
        auto mu = require_contiguous<double>(means, op, "means");
        auto p = require_contiguous<double>(prec, op, "prec");
        auto c = require_contiguous<double>(cst, op, "cst");
        require_ndim(x, 2, op, "X");
        require_ndim(mu, 2, op, "means");
        require_ndim(c, 1, op, "cst");
        const int64_t N = x.shape(0), D = x.shape(1), K = mu.shape(0);
        PYAIML_CHECK(mu.shape(1) == D, op, ": means must have shape (K, ", D, "). Received ", shape_str(mu));
        PYAIML_CHECK(c.shape(0) == K, op, ": cst must have shape (", K, ",). Received ", shape_str(c));
        const bool full = p.ndim() == 3;
        PYAIML_CHECK((p.ndim() == 2 && p.shape(0) == K && p.shape(1) == D) ||
                         (full && p.shape(0) == K && p.shape(1) == D && p.shape(2) == D),
                     op, ": prec must have shape (", K, ", ", D, ") or (", K, ", ", D, ", ", D, "). Received ",
                     shape_str(p));
        py::array_t<double> out({N, K});
        {
          py::gil_scoped_release nogil;
          const HmmKernels& k = hmm_kernels();
          (full ? k.loglik_full : k.loglik_diag)(N, D, K, x.data(), mu.data(), p.data(), c.data(),
                                                 out.mutable_data());
        }
        return out;
      },
      py::arg("X"), py::arg("means"), py::arg("prec"), py::arg("cst"));
}

}  // namespace pyaiml
