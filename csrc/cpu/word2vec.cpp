// word2vec.cpp: the Word2Vec epoch trainer (see word2vec.h), compiled once per ISA.
//
// Per training example the input vector l1 (skip-gram: syn0 row of the context word;
// CBOW: mean or sum of the window's syn0 rows) meets a list of output rows (the target and
// its negatives in syn1neg, or the Huffman path in syn1). Their dot products do not depend
// on each other, so they are computed first, as a block (independent FMA chains keep the
// core busy), then each row gets its update and the input gradient accumulates in neu1e.
// Rows are padded to a multiple of 16 floats with zeros that stay zero, so every loop runs
// over whole SIMD vectors with no tail. sigma(x) is a 1025-entry table on [-8, 8] read with
// linear interpolation (max error 3e-6; continuous, so the C++ and Numba trainers agree to
// rounding). The optional loss is exact: log1p(exp(-|x|)) in float64.
// Random numbers: splitmix64, one stream per job (seed, epoch, job); the Numba fallback
// (pyaiml/_numba/word2vec.py) draws the same numbers in the same order.
#include "cpu/word2vec.h"

#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include "common/simd.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

constexpr int SIG_N = 1024;       // table intervals over [-SIG_MAX, SIG_MAX]
constexpr float SIG_MAX = 8.f;
constexpr int BLOCK = 16;         // output rows whose dot products are computed together

struct SigTable {
  float t[SIG_N + 1];
  SigTable() {
    for (int i = 0; i <= SIG_N; ++i) {
      double x = (double(i) / SIG_N) * (2.0 * SIG_MAX) - SIG_MAX;
      t[i] = float(1.0 / (1.0 + std::exp(-x)));
    }
  }
};
const SigTable kSig;

inline float sigmoid(float f) {
  float x = (f + SIG_MAX) * (float(SIG_N) / (2.f * SIG_MAX));
  if (!(x > 0.f)) return kSig.t[0];
  if (x >= float(SIG_N)) return kSig.t[SIG_N];
  int i = int(x);
  float w = x - float(i);
  return kSig.t[i] + w * (kSig.t[i + 1] - kSig.t[i]);
}

// -log sigma(x), exact, in double.
inline double softplus_neg(double x) { return x > 0 ? std::log1p(std::exp(-x)) : -x + std::log1p(std::exp(x)); }

inline uint64_t splitmix(uint64_t& s) {
  s += 0x9E3779B97F4A7C15ull;
  uint64_t z = s;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint64_t job_state(uint64_t seed, int64_t epoch, int64_t job) {
  return seed + 0x632BE59BD9B4E019ull * uint64_t(epoch + 1) + 0x9E3779B97F4A7C15ull * uint64_t(job + 1);
}

// Uniform integer in [0, n) from the high 32 bits of r (multiply-shift, no division).
inline uint64_t below(uint64_t r, uint64_t n) { return ((r >> 32) * n) >> 32; }

// Horizontal sum as a tree of half-width shuffles (4 steps on AVX-512) instead of the
// 15 dependent scalar adds GCC emits for a lane loop; one per dot product, so it counts.
static inline float hsum_tree(vf v) {
  typedef float v8 __attribute__((vector_size(32)));
  typedef float v4 __attribute__((vector_size(16)));
#if defined(__AVX512F__)
  v8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
         __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  v4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
#elif defined(__AVX2__)
  (void)sizeof(v8);
  v4 q = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
#else
  (void)sizeof(v8);
  v4 q = v;
#endif
  q += __builtin_shufflevector(q, q, 2, 3, 0, 1);
  q += __builtin_shufflevector(q, q, 1, 0, 3, 2);
  return q[0];
}

// Row length: NV vectors of VL floats, a compile-time constant for the common sizes (the
// loops unroll and l1/neu1e stay in registers), or ld at run time when NV == 0.
template <int NV>
inline float dot(const float* a, const float* b, int64_t ld) {
  if constexpr (NV > 0) {
    vf s0 = splat(0.f), s1 = splat(0.f);
#pragma GCC unroll 16
    for (int k = 0; k < NV; k += 2) {
      s0 += loadu(a + k * VL) * loadu(b + k * VL);
      if (k + 1 < NV) s1 += loadu(a + (k + 1) * VL) * loadu(b + (k + 1) * VL);
    }
    return hsum_tree(s0 + s1);
  } else {
    vf s0 = splat(0.f), s1 = splat(0.f);
    int64_t k = 0;
    for (; k + 2 * VL <= ld; k += 2 * VL) {
      s0 += loadu(a + k) * loadu(b + k);
      s1 += loadu(a + k + VL) * loadu(b + k + VL);
    }
    for (; k < ld; k += VL) s0 += loadu(a + k) * loadu(b + k);
    return hsum_tree(s0 + s1);
  }
}

// One example: input l1 against `n` output rows with labels; gradient added to neu1e.
template <int NV>
inline void train_rows(const float* l1, float* neu1e, float* syn, int64_t ld, const int32_t* rows,
                       const float* labels, int n, float alpha, bool want_loss, double& loss) {
  float g[BLOCK];
  for (int b0 = 0; b0 < n; b0 += BLOCK) {
    const int nb = n - b0 < BLOCK ? n - b0 : BLOCK;
    // The output rows are random (negatives) or scattered (Huffman path): request all
    // their cache lines at once so the misses overlap instead of queueing behind each dot.
    for (int t = 0; t < nb; ++t) {
      const char* r = reinterpret_cast<const char*>(syn + int64_t(rows[b0 + t]) * ld);
      for (int64_t c = 0; c < ld * 4; c += 64) __builtin_prefetch(r + c, 1, 3);
    }
    for (int t = 0; t < nb; ++t) {
      const float f = dot<NV>(l1, syn + int64_t(rows[b0 + t]) * ld, ld);
      const float lab = labels[b0 + t];
      g[t] = (lab - sigmoid(f)) * alpha;
      if (want_loss) loss += softplus_neg(lab > 0.5f ? double(f) : -double(f));
    }
    if constexpr (NV > 0) {
      vf lv[NV], acc[NV];
#pragma GCC unroll 32
      for (int k = 0; k < NV; ++k) {
        lv[k] = loadu(l1 + k * VL);
        acc[k] = loadu(neu1e + k * VL);
      }
      for (int t = 0; t < nb; ++t) {
        float* r = syn + int64_t(rows[b0 + t]) * ld;
        const vf gv = splat(g[t]);
#pragma GCC unroll 32
        for (int k = 0; k < NV; ++k) {
          const vf sv = loadu(r + k * VL);
          acc[k] += gv * sv;
          storeu(r + k * VL, sv + gv * lv[k]);
        }
      }
#pragma GCC unroll 32
      for (int k = 0; k < NV; ++k) storeu(neu1e + k * VL, acc[k]);
    } else {
      for (int t = 0; t < nb; ++t) {
        float* r = syn + int64_t(rows[b0 + t]) * ld;
        const vf gv = splat(g[t]);
        for (int64_t k = 0; k < ld; k += VL) {
          const vf sv = loadu(r + k);
          storeu(neu1e + k, loadu(neu1e + k) + gv * sv);
          storeu(r + k, sv + gv * loadu(l1 + k));
        }
      }
    }
  }
}

struct Scratch {
  std::vector<int32_t> sent, rows;
  std::vector<float> labels, neu1, neu1e;
  std::vector<int64_t> ctx;
};

// One training example predicting word w from input l1: the Huffman path of w (syn1, labels
// 1 - code) and/or w plus `negative` noise words (syn1neg, labels 1, 0, ...; a noise draw
// equal to w is skipped, as in word2vec.c). The input gradient accumulates in sc.neu1e.
template <int NV>
inline void train_example(const W2VArgs& a, Scratch& sc, const float* l1, int32_t w, uint64_t& rng,
                          float alpha, double& loss) {
  float* neu1e = sc.neu1e.data();
  const bool want_loss = a.compute_loss != 0;
  if (a.hs) {
    const int64_t c0 = a.code_off[w], c1 = a.code_off[w + 1];
    const int n = int(c1 - c0);
    for (int d = 0; d < n; ++d) {
      sc.rows[d] = a.points[c0 + d];
      sc.labels[d] = 1.f - float(a.codes[c0 + d]);
    }
    train_rows<NV>(l1, neu1e, a.syn1, a.ld, sc.rows.data(), sc.labels.data(), n, alpha, want_loss, loss);
  }
  if (a.negative > 0) {
    int n = 0;
    sc.rows[n] = w;
    sc.labels[n++] = 1.f;
    for (int d = 0; d < a.negative; ++d) {
      const uint64_t r = splitmix(rng);
      uint64_t i = below(r, uint64_t(a.V));
      const int32_t t = uint32_t(r) < a.alias_thr[i] ? int32_t(i) : a.alias_idx[i];
      if (t == w) continue;
      sc.rows[n] = t;
      sc.labels[n++] = 0.f;
    }
    train_rows<NV>(l1, neu1e, a.syn1neg, a.ld, sc.rows.data(), sc.labels.data(), n, alpha, want_loss, loss);
  }
}

template <int NV>
void train_job(const W2VArgs& a, int64_t job, Scratch& sc, double& loss, int64_t& effective, int64_t& pairs) {
  const int64_t ld = NV > 0 ? int64_t(NV) * VL : a.ld;
  uint64_t rng = job_state(a.seed, a.epoch, job);
  const double total = double(a.total_words) * double(a.epochs);
  float* neu1 = sc.neu1.data();
  float* neu1e = sc.neu1e.data();
  for (int64_t s = a.job_off[job]; s < a.job_off[job + 1]; ++s) {
    const int64_t w0 = a.sent_off[s], w1 = a.sent_off[s + 1];
    double progress = (double(a.epoch) * double(a.total_words) + double(w0)) / total;
    double al = a.alpha - (a.alpha - a.min_alpha) * progress;
    if (al < a.min_alpha) al = a.min_alpha;
    const float alpha = float(al);
    // Subsampling of frequent words.
    int64_t n = 0;
    for (int64_t p = w0; p < w1; ++p) {
      const int32_t w = a.words[p];
      if (uint32_t(splitmix(rng) >> 32) <= a.sample_thr[w]) sc.sent[n++] = w;
    }
    effective += n;
    const int32_t* sent = sc.sent.data();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t b = a.shrink_windows ? int64_t(below(splitmix(rng), uint64_t(a.window))) : 0;
      const int64_t lo = i - a.window + b < 0 ? 0 : i - a.window + b;
      const int64_t hi = i + a.window - b + 1 > n ? n : i + a.window - b + 1;
      if (a.sg) {
        for (int64_t j = lo; j < hi; ++j) {
          if (j == i) continue;
          float* l1 = a.syn0 + int64_t(sent[j]) * ld;
          for (int64_t k = 0; k < ld; k += VL) storeu(neu1e + k, splat(0.f));
          train_example<NV>(a, sc, l1, sent[i], rng, alpha, loss);
          if (a.lockf) {
            const vf f = splat(a.lockf[sent[j]]);
            for (int64_t k = 0; k < ld; k += VL) storeu(l1 + k, loadu(l1 + k) + f * loadu(neu1e + k));
          } else {
            for (int64_t k = 0; k < ld; k += VL) storeu(l1 + k, loadu(l1 + k) + loadu(neu1e + k));
          }
          ++pairs;
        }
      } else {
        int64_t count = 0;
        for (int64_t k = 0; k < ld; k += VL) storeu(neu1 + k, splat(0.f));
        for (int64_t j = lo; j < hi; ++j) {
          if (j == i) continue;
          const float* r = a.syn0 + int64_t(sent[j]) * ld;
          for (int64_t k = 0; k < ld; k += VL) storeu(neu1 + k, loadu(neu1 + k) + loadu(r + k));
          ++count;
        }
        if (count == 0) continue;
        const vf inv = splat(1.f / float(count));
        if (a.cbow_mean)
          for (int64_t k = 0; k < ld; k += VL) storeu(neu1 + k, loadu(neu1 + k) * inv);
        for (int64_t k = 0; k < ld; k += VL) storeu(neu1e + k, splat(0.f));
        train_example<NV>(a, sc, neu1, sent[i], rng, alpha, loss);
        // Same convention as word2vec.c: with the mean the gradient goes unscaled to every
        // context row; with the sum it is divided by the window size.
        if (!a.cbow_mean)
          for (int64_t k = 0; k < ld; k += VL) storeu(neu1e + k, loadu(neu1e + k) * inv);
        for (int64_t j = lo; j < hi; ++j) {
          if (j == i) continue;
          float* r = a.syn0 + int64_t(sent[j]) * ld;
          if (a.lockf) {
            const vf f = splat(a.lockf[sent[j]]);
            for (int64_t k = 0; k < ld; k += VL) storeu(r + k, loadu(r + k) + f * loadu(neu1e + k));
          } else {
            for (int64_t k = 0; k < ld; k += VL) storeu(r + k, loadu(r + k) + loadu(neu1e + k));
          }
        }
        ++pairs;
      }
    }
  }
}

template <int NV>
W2VResult train_epoch_nv(const W2VArgs& a) {
  // Scratch sizes: the longest sentence, the longest Huffman path, the negatives.
  int64_t max_sent = 1;
  for (int64_t s = 0; s < a.job_off[a.n_jobs]; ++s) {
    const int64_t len = a.sent_off[s + 1] - a.sent_off[s];
    if (len > max_sent) max_sent = len;
  }
  int64_t max_rows = a.negative + 1;
  if (a.hs)
    for (int64_t w = 0; w < a.V; ++w)
      if (a.code_off[w + 1] - a.code_off[w] > max_rows) max_rows = a.code_off[w + 1] - a.code_off[w];

  std::vector<double> job_loss(size_t(a.n_jobs), 0.0);
  std::vector<int64_t> job_eff(size_t(a.n_jobs), 0), job_pairs(size_t(a.n_jobs), 0);
  std::atomic<int64_t> next{0};
  auto worker = [&]() {
    Scratch sc;
    sc.sent.resize(size_t(max_sent));
    sc.rows.resize(size_t(max_rows));
    sc.labels.resize(size_t(max_rows));
    sc.neu1.assign(size_t(a.ld), 0.f);
    sc.neu1e.assign(size_t(a.ld), 0.f);
    for (;;) {
      const int64_t j = next.fetch_add(1, std::memory_order_relaxed);
      if (j >= a.n_jobs) break;
      train_job<NV>(a, j, sc, job_loss[size_t(j)], job_eff[size_t(j)], job_pairs[size_t(j)]);
    }
  };
  int nt = a.workers < 1 ? 1 : a.workers;
  if (nt > a.n_jobs) nt = int(a.n_jobs > 0 ? a.n_jobs : 1);
  if (nt == 1) {
    worker();
  } else {
    std::vector<std::thread> th;
    th.reserve(size_t(nt - 1));
    for (int t = 1; t < nt; ++t) th.emplace_back(worker);
    worker();
    for (auto& t : th) t.join();
  }
  W2VResult res;
  for (int64_t j = 0; j < a.n_jobs; ++j) {  // fixed order: same sum for any thread count
    res.loss += job_loss[size_t(j)];
    res.effective += job_eff[size_t(j)];
    res.pairs += job_pairs[size_t(j)];
  }
  return res;
}

// Row lengths with a specialised kernel: up to 256 floats (D <= 256) on every ISA.
W2VResult train_epoch(const W2VArgs& a) {
  if (a.ld % VL == 0) {
    switch (a.ld / VL) {
#define W2V_CASE(n) \
  case n:           \
    return train_epoch_nv<n>(a);
      W2V_CASE(1) W2V_CASE(2) W2V_CASE(3) W2V_CASE(4) W2V_CASE(5) W2V_CASE(6) W2V_CASE(7) W2V_CASE(8)
      W2V_CASE(10) W2V_CASE(12) W2V_CASE(14) W2V_CASE(16)
#undef W2V_CASE
      default:
        break;
    }
  }
  return train_epoch_nv<0>(a);
}

}  // namespace

const W2VKernels& w2v_kernels() {
  static const W2VKernels k{&train_epoch};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
