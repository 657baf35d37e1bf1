// bindings/word2vec.cpp: _C.w2v_train_epoch(...) -> (loss, effective_words, examples).
// Validates every array (dtype, shape, contiguity, index ranges) before training, so the
// trainer never reads or writes out of bounds; then releases the GIL for the whole epoch.
// The trainer starts `workers` threads of its own for the call (a per-model setting, like
// gensim's), rather than using the shared pool, whose size is global.
#include <cmath>

#include "bindings/common.h"
#include "cpu/word2vec.h"

namespace pyaiml {

namespace {

template <class T>
const T* vec_arg(const py::array& a, const char* name, int64_t want_len) {
  const char* op = "word2vec";
  require_dtype<T>(a, op, name);
  require_ndim(a, 1, op, name);
  PYAIML_CHECK(a.flags() & py::array::c_style, op, ": ", name, " must be C-contiguous");
  require_aligned(a, op, name);
  if (want_len >= 0)
    PYAIML_CHECK(a.shape(0) == want_len, op, ": ", name, " must have length ", want_len, ". Received ",
                 shape_str(a));
  return static_cast<const T*>(a.data());
}

float* mat_arg(const py::array& a, const char* name, int64_t V, int64_t ld) {
  const char* op = "word2vec";
  require_dtype<float>(a, op, name);
  require_ndim(a, 2, op, name);
  PYAIML_CHECK(a.flags() & py::array::c_style, op, ": ", name, " must be C-contiguous");
  PYAIML_CHECK(a.writeable(), op, ": ", name, " must be writeable");
  require_aligned(a, op, name);
  PYAIML_CHECK(a.shape(0) == V && a.shape(1) == ld, op, ": ", name, " must have shape (", V, ", ", ld,
               "). Received ", shape_str(a));
  return static_cast<float*>(const_cast<void*>(a.data()));
}

}  // namespace

void register_word2vec(py::module_& m) {
  m.def(
      "w2v_train_epoch",
      [](py::array syn0, py::array syn1neg, py::array syn1, py::array words, py::array sent_off,
         py::array job_off, py::array sample_thr, py::array alias_thr, py::array alias_idx, py::array codes,
         py::array points, py::array code_off, int sg, int hs, int negative, int window, int cbow_mean,
         int shrink_windows, double alpha, double min_alpha, int64_t epoch, int64_t epochs, uint64_t seed,
         int workers, int compute_loss, py::object lockf) {
        const char* op = "word2vec";
        require_ndim(syn0, 2, op, "syn0");
        W2VArgs a;
        a.V = syn0.shape(0);
        a.ld = syn0.shape(1);
        PYAIML_CHECK(a.V >= 1, op, ": the vocabulary must not be empty");
        PYAIML_CHECK(a.ld >= 16 && a.ld % 16 == 0, op, ": syn0 rows must be padded to a multiple of 16. Received ",
                     shape_str(syn0));
        a.syn0 = mat_arg(syn0, "syn0", a.V, a.ld);
        PYAIML_CHECK(hs || negative > 0, op, ": at least one of hs=1 or negative>0 is needed");
        PYAIML_CHECK(negative >= 0 && negative <= 1000, op, ": negative must be in [0, 1000]. Received ", negative);
        PYAIML_CHECK(window >= 1, op, ": window must be >= 1. Received ", window);
        PYAIML_CHECK(workers >= 1 && workers <= 1024, op, ": workers must be in [1, 1024]. Received ", workers);
        PYAIML_CHECK(epochs >= 1 && epoch >= 0 && epoch < epochs, op, ": epoch must be in [0, epochs). Received ",
                     epoch, " of ", epochs);
        PYAIML_CHECK(std::isfinite(alpha) && std::isfinite(min_alpha), op, ": alpha and min_alpha must be finite");
        if (negative > 0) a.syn1neg = mat_arg(syn1neg, "syn1neg", a.V, a.ld);
        if (hs) a.syn1 = mat_arg(syn1, "syn1", a.V, a.ld);
        require_ndim(words, 1, op, "words");
        const int64_t N = words.shape(0);
        a.words = vec_arg<int32_t>(words, "words", N);
        require_ndim(sent_off, 1, op, "sent_off");
        const int64_t S = sent_off.shape(0) - 1;
        PYAIML_CHECK(S >= 0, op, ": sent_off must have at least one entry");
        a.sent_off = vec_arg<int64_t>(sent_off, "sent_off", S + 1);
        require_ndim(job_off, 1, op, "job_off");
        a.n_jobs = job_off.shape(0) - 1;
        PYAIML_CHECK(a.n_jobs >= 0, op, ": job_off must have at least one entry");
        a.job_off = vec_arg<int64_t>(job_off, "job_off", a.n_jobs + 1);
        a.sample_thr = vec_arg<uint32_t>(sample_thr, "sample_thr", a.V);
        if (negative > 0) {
          a.alias_thr = vec_arg<uint32_t>(alias_thr, "alias_thr", a.V);
          a.alias_idx = vec_arg<int32_t>(alias_idx, "alias_idx", a.V);
        }
        if (hs) {
          a.code_off = vec_arg<int64_t>(code_off, "code_off", a.V + 1);
          require_ndim(codes, 1, op, "codes");
          const int64_t C = codes.shape(0);
          a.codes = vec_arg<uint8_t>(codes, "codes", C);
          a.points = vec_arg<int32_t>(points, "points", C);
        }
        // Index ranges (cheap next to an epoch of training).
        PYAIML_CHECK(a.sent_off[0] == 0 && a.sent_off[S] == N, op, ": sent_off must start at 0 and end at len(words)");
        for (int64_t s = 0; s < S; ++s)
          PYAIML_CHECK(a.sent_off[s] <= a.sent_off[s + 1], op, ": sent_off must be non-decreasing");
        PYAIML_CHECK(a.job_off[0] == 0 && a.job_off[a.n_jobs] == S, op,
                     ": job_off must start at 0 and end at the number of sentences");
        for (int64_t j = 0; j < a.n_jobs; ++j)
          PYAIML_CHECK(a.job_off[j] <= a.job_off[j + 1], op, ": job_off must be non-decreasing");
        for (int64_t i = 0; i < N; ++i)
          PYAIML_CHECK(a.words[i] >= 0 && a.words[i] < a.V, op, ": words must be in [0, ", a.V, "). Received ",
                       a.words[i], " at position ", i);
        if (negative > 0)
          for (int64_t i = 0; i < a.V; ++i)
            PYAIML_CHECK(a.alias_idx[i] >= 0 && a.alias_idx[i] < a.V, op, ": alias_idx out of range at ", i);
        if (hs) {
          const int64_t C = codes.shape(0);
          PYAIML_CHECK(a.code_off[0] == 0 && a.code_off[a.V] == C, op, ": code_off must start at 0 and end at len(codes)");
          for (int64_t w = 0; w < a.V; ++w)
            PYAIML_CHECK(a.code_off[w] <= a.code_off[w + 1], op, ": code_off must be non-decreasing");
          for (int64_t i = 0; i < C; ++i)
            PYAIML_CHECK(a.points[i] >= 0 && a.points[i] < a.V && a.codes[i] <= 1, op,
                         ": Huffman points/codes out of range at ", i);
        }
        a.sg = sg;
        a.hs = hs;
        a.negative = negative;
        a.window = window;
        a.cbow_mean = cbow_mean;
        a.shrink_windows = shrink_windows;
        a.alpha = alpha;
        a.min_alpha = min_alpha;
        a.epoch = epoch;
        a.epochs = epochs;
        a.total_words = N > 0 ? N : 1;
        a.seed = seed;
        a.workers = workers;
        a.compute_loss = compute_loss;
        py::array lockf_arr;  // keeps the array alive while the kernel runs
        if (!lockf.is_none()) {
          PYAIML_CHECK(py::isinstance<py::array>(lockf), op, ": lockf must be a float32 NumPy array or None");
          lockf_arr = py::reinterpret_borrow<py::array>(lockf);
          a.lockf = vec_arg<float>(lockf_arr, "lockf", a.V);
          for (int64_t i = 0; i < a.V; ++i)
            PYAIML_CHECK(std::isfinite(a.lockf[i]), op, ": lockf must be finite. Received ", a.lockf[i], " at ", i);
        }
        W2VResult r;
        {
          py::gil_scoped_release nogil;
          r = w2v_kernels().train_epoch(a);
        }
        return py::make_tuple(r.loss, r.effective, r.pairs);
      },
      py::arg("syn0"), py::arg("syn1neg"), py::arg("syn1"), py::arg("words"), py::arg("sent_off"),
      py::arg("job_off"), py::arg("sample_thr"), py::arg("alias_thr"), py::arg("alias_idx"), py::arg("codes"),
      py::arg("points"), py::arg("code_off"), py::arg("sg"), py::arg("hs"), py::arg("negative"), py::arg("window"),
      py::arg("cbow_mean"), py::arg("shrink_windows"), py::arg("alpha"), py::arg("min_alpha"), py::arg("epoch"),
      py::arg("epochs"), py::arg("seed"), py::arg("workers"), py::arg("compute_loss"), py::arg("lockf") = py::none());
}

}  // namespace pyaiml
