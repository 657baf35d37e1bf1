// hmm.cpp: HMM kernels (see hmm.h), compiled once per ISA. Vectors of doubles through GCC
// vector extensions (2 lanes baseline, 4 AVX2, 8 AVX-512); the state dimension is padded to
// KP, a multiple of the lane count, with zeros (probabilities) or -inf (log values).
//
// Forward step in scaled space: alpha_t = (alpha_{t-1} A) * b_t, normalised by c_t; the
// vector-matrix product runs over rows of A with 4-vector register blocks (A stays in L1/L2
// for K <= 64). Emission probabilities are exp(logb - max_k logb) per frame, so no frame
// underflows. Log space keeps log alpha / log beta and takes each step as
// L + log((exp(la - L)) A) with a vectorised exp/log (max-shifted, never exp of a large
// negative sum). Expected transition counts: xi = A o (U^T W) where U holds normalised
// forward rows and W the backward messages, a K x T x K product per sequence.
//
// Sequences are split into at most G_MAX groups by frame count (independent of the thread
// count); each group sums its sequences' transition counts in order, groups are summed in
// order, so any thread count gives the same bits.
// Tests: tests/test_hmm_ops.py.
#include "cpu/hmm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

constexpr int DL = VL / 2;  // doubles per vector
typedef double vd __attribute__((vector_size(VL * 4)));
typedef double vd_u __attribute__((vector_size(VL * 4), aligned(8)));
typedef int64_t vl __attribute__((vector_size(VL * 4)));
typedef int64_t vl_u __attribute__((vector_size(VL * 4), aligned(8)));

constexpr double NEG_INF = -std::numeric_limits<double>::infinity();
constexpr int64_t G_MAX = 64;  // fixed number of reduction groups (not the thread count)

inline vd ld(const double* p) { return *reinterpret_cast<const vd_u*>(p); }
inline void st(double* p, vd v) { *reinterpret_cast<vd_u*>(p) = v; }
// x - 0 is exact for every x (also -0), so this folds to a plain broadcast.
inline vd sp(double x) { return x - vd{}; }

// exp on a vector: n = round(x / ln2), r = x - n ln2 (two-part constant), degree-13 Taylor
// polynomial on |r| <= 0.35 (truncation < 2e-16 relative), 2^n applied in two halves so
// results down to the subnormal range are right. exp(-inf) = 0, NaN stays NaN.
inline vd vexp(vd x) {
  const vd lo = sp(-745.2), hi = sp(709.78);
  vd xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  const vd shifter = sp(6755399441055744.0);  // 1.5 * 2^52: rounds to nearest integer
  vd n = (xc * 1.4426950408889634 + shifter) - shifter;
  vd r = xc - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  vd p = sp(1.0 / 6227020800.0);
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  vl ni = __builtin_convertvector(n, vl);
  vl n1 = ni / 2;
  vl n2 = ni - n1;
  vd s1, s2;
  vl b1 = (n1 + 1023) << 52, b2 = (n2 + 1023) << 52;
  std::memcpy(&s1, &b1, sizeof(vd));
  std::memcpy(&s2, &b2, sizeof(vd));
  vd res = p * s1 * s2;
  res = x < lo ? sp(0.0) : res;
  res = x > hi ? sp(std::numeric_limits<double>::infinity()) : res;
  return x != x ? x : res;
}

// log on a vector: x = 2^e m with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(f),
// f = (m - 1) / (m + 1), |f| <= 0.172, series to f^23 (truncation < 1e-17).
// log(0) = -inf, log(inf) = inf, log(x < 0) = NaN; subnormals are rescaled first.
inline vd vlog(vd x) {
  const vd tiny = sp(2.2250738585072014e-308);
  vd xs = x < tiny ? x * 18014398509481984.0 : x;  // * 2^54
  vl adj = x < tiny ? vl{} + 54 : vl{};
  vl bits;
  std::memcpy(&bits, &xs, sizeof(vd));
  vl e = ((bits >> 52) & 0x7ff) - 1023 - adj;
  vl mb = (bits & 0x000fffffffffffffLL) | (int64_t(1023) << 52);
  vd m;
  std::memcpy(&m, &mb, sizeof(vd));
  vl big = m > 1.4142135623730951;
  m = big ? m * 0.5 : m;
  e = e - big;  // big is -1 (true) or 0
  vd f = (m - 1.0) / (m + 1.0);
  vd s = f * f;
  vd q = sp(1.0 / 23);
  q = q * s + 1.0 / 21;
  q = q * s + 1.0 / 19;
  q = q * s + 1.0 / 17;
  q = q * s + 1.0 / 15;
  q = q * s + 1.0 / 13;
  q = q * s + 1.0 / 11;
  q = q * s + 1.0 / 9;
  q = q * s + 1.0 / 7;
  q = q * s + 1.0 / 5;
  q = q * s + 1.0 / 3;
  q = q * s + 1.0;
  vd ed = __builtin_convertvector(e, vd);
  vd res = ed * 6.93147180369123816490e-01 + (2.0 * f * q + ed * 1.90821492927058770002e-10);
  res = x == 0.0 ? sp(NEG_INF) : res;
  res = x < 0.0 ? sp(std::numeric_limits<double>::quiet_NaN()) : res;
  res = x == std::numeric_limits<double>::infinity() ? x : res;
  return x != x ? x : res;
}

// out[j] = sum_{i < K} p[i] M[i*KP + j] for j < KP.
inline void vecmat(const double* p, const double* M, int64_t K, int64_t KP, double* out) {
  int64_t j = 0;
  // 8 independent accumulator chains: the FMA latency (4 cycles) is covered at 2 FMA/cycle.
  // K=64 on Zen 4 AVX-512: 0.55 -> 0.33 us per step against 4-vector blocks.
  for (; j + 8 * DL <= KP; j += 8 * DL) {
    vd a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{};
    const double* r = M + j;
    for (int64_t i = 0; i < K; ++i, r += KP) {
      const vd pi = sp(p[i]);
      a0 += pi * ld(r);
      a1 += pi * ld(r + DL);
      a2 += pi * ld(r + 2 * DL);
      a3 += pi * ld(r + 3 * DL);
      a4 += pi * ld(r + 4 * DL);
      a5 += pi * ld(r + 5 * DL);
      a6 += pi * ld(r + 6 * DL);
      a7 += pi * ld(r + 7 * DL);
    }
    double* o = out + j;
    st(o, a0); st(o + DL, a1); st(o + 2 * DL, a2); st(o + 3 * DL, a3);
    st(o + 4 * DL, a4); st(o + 5 * DL, a5); st(o + 6 * DL, a6); st(o + 7 * DL, a7);
  }
  for (; j + 4 * DL <= KP; j += 4 * DL) {
    vd a0{}, a1{}, a2{}, a3{};
    const double* r = M + j;
    for (int64_t i = 0; i < K; ++i, r += KP) {
      const vd pi = sp(p[i]);
      a0 += pi * ld(r);
      a1 += pi * ld(r + DL);
      a2 += pi * ld(r + 2 * DL);
      a3 += pi * ld(r + 3 * DL);
    }
    st(out + j, a0);
    st(out + j + DL, a1);
    st(out + j + 2 * DL, a2);
    st(out + j + 3 * DL, a3);
  }
  for (; j < KP; j += DL) {
    vd a0{}, a1{};
    const double* r = M + j;
    int64_t i = 0;
    for (; i + 1 < K; i += 2, r += 2 * KP) {
      a0 += sp(p[i]) * ld(r);
      a1 += sp(p[i + 1]) * ld(r + KP);
    }
    if (i < K) a0 += sp(p[i]) * ld(r);
    st(out + j, a0 + a1);
  }
}

// X (K x KP) += sum_{t < T1} U[t*KP + i] * W[t*KP + j]; U's padded columns are zero and
// U rows have at least IB - 1 readable entries past K (KP >= K and the caller pads).
// IB rows x 4 vectors of accumulators; W streams from L2 once per IB rows (K=64, T=1000,
// AVX-512: IB 2 -> 4 took the xi pass from 0.73 to ~0.4 ms).
#if defined(__AVX512F__)
constexpr int IB = 4;
#else
constexpr int IB = 2;
#endif
void xi_accum(const double* U, const double* W, int64_t T1, int64_t K, int64_t KP, double* X) {
  for (int64_t i = 0; i < K; i += IB) {
    const int nrow = int(std::min<int64_t>(IB, K - i));
    int64_t j = 0;
    for (; j + 4 * DL <= KP; j += 4 * DL) {
      vd acc[IB][4];
      for (int r = 0; r < IB; ++r)
        for (int q = 0; q < 4; ++q) acc[r][q] = vd{};
      for (int64_t t = 0; t < T1; ++t) {
        const double* w = W + t * KP + j;
        const vd w0 = ld(w), w1 = ld(w + DL), w2 = ld(w + 2 * DL), w3 = ld(w + 3 * DL);
        const double* u = U + t * KP + i;
        for (int r = 0; r < IB; ++r) {
          const vd ur = sp(r < nrow ? u[r] : 0.0);
          acc[r][0] += ur * w0;
          acc[r][1] += ur * w1;
          acc[r][2] += ur * w2;
          acc[r][3] += ur * w3;
        }
      }
      for (int r = 0; r < nrow; ++r)
        for (int q = 0; q < 4; ++q) {
          double* x = X + (i + r) * KP + j + q * DL;
          st(x, ld(x) + acc[r][q]);
        }
    }
    for (; j < KP; j += DL) {
      vd acc[IB];
      for (int r = 0; r < IB; ++r) acc[r] = vd{};
      for (int64_t t = 0; t < T1; ++t) {
        const vd w0 = ld(W + t * KP + j);
        const double* u = U + t * KP + i;
        for (int r = 0; r < IB; ++r) acc[r] += sp(r < nrow ? u[r] : 0.0) * w0;
      }
      for (int r = 0; r < nrow; ++r) {
        double* x = X + (i + r) * KP + j;
        st(x, ld(x) + acc[r]);
      }
    }
  }
}

inline double max_k(const double* v, int64_t K) {
  double m = NEG_INF;
  for (int64_t k = 0; k < K; ++k) m = v[k] > m ? v[k] : m;
  return m;
}
// Max of a padded row (entries K..KP are -inf); NaN entries are skipped.
inline double vmaxp(const double* v, int64_t KP) {
  vd a = ld(v);
  for (int64_t k = DL; k < KP; k += DL) {
    const vd b = ld(v + k);
    a = b > a ? b : a;
  }
  double m = a[0];
  for (int l = 1; l < DL; ++l) m = a[l] > m ? a[l] : m;
  return m;
}

// Sum of a padded row (entries K..KP are zero): one vector accumulator, then its lanes.
inline double vsum(const double* v, int64_t KP) {
  vd a = ld(v);
  for (int64_t k = DL; k < KP; k += DL) a += ld(v + k);
  double s = 0.0;
  for (int l = 0; l < DL; ++l) s += a[l];
  return s;
}
inline double sum_k(const double* v, int64_t K) {
  double s = 0.0;
  for (int64_t k = 0; k < K; ++k) s += v[k];
  return s;
}

struct Scratch {
  std::vector<double> a, b, c, d, v1, v2, v3, v4;
  std::vector<int64_t> psi;
};
thread_local Scratch tl;

inline double* grow(std::vector<double>& v, size_t n) {
  if (v.size() < n) v.assign(n, 0.0);
  return v.data();
}

// Emission log-likelihood rows of one sequence: a dense (T, K) block, or rows of a (M, K)
// table picked by symbols (categorical emissions: no (N, K) array is ever built).
struct Emis {
  const double* lb;
  const int64_t* sym;
  int64_t K;
  const double* btab = nullptr;   // (M, KP) exp(table - row max), scaled space with symbols
  const double* mbtab = nullptr;  // (M,) row maxima
  const double* row(int64_t t) const { return sym ? lb + sym[t] * K : lb + t * K; }
};

// Per-group partial sums, null when not wanted: xi (K x KP), emission counts (M x K),
// posteriors at t = 0 (K).
struct Acc {
  double* X = nullptr;
  double* cnt = nullptr;
  double* start = nullptr;
};

// Normalised posterior row g (K entries) of frame t: write it out and accumulate counts.
inline void use_gamma(const double* g, int64_t t, int64_t K, const Emis& e, const Acc& acc) {
  if (acc.cnt) {
    double* c = acc.cnt + e.sym[t] * K;
    for (int64_t k = 0; k < K; ++k) c[k] += g[k];
  }
  if (acc.start && t == 0)
    for (int64_t k = 0; k < K; ++k) acc.start[k] += g[k];
}

struct Model {
  int64_t K, KP;
  std::vector<double> A, AT, logA, pi, logpi;  // padded
};

// One sequence, scaled space. Returns log p(x); -inf if the model cannot emit it.
double fb_scaled(const Model& m, const Emis& e, int64_t T, double* post, const Acc& acc) {
  double* X = acc.X;
  const bool need_g = post || acc.cnt || acc.start;
  double* gbuf = grow(tl.v2, m.KP);
  const int64_t K = m.K, KP = m.KP;
  double* Al = grow(tl.a, T * KP);
  double* B = grow(tl.b, T * KP);  // dense emissions: b rows, then W rows in place; table: W rows
  double* c = grow(tl.c, T);
  double* beta = grow(tl.v1, KP);
  double lp = 0.0;
  // emission probabilities exp(logb - max_k logb): from the per-symbol table, or per frame
  if (e.btab) {
    for (int64_t t = 0; t < T; ++t) lp += e.mbtab[e.sym[t]];
  } else {
    for (int64_t t = 0; t < T; ++t) {
      const double* row = e.row(t);
      double* bt = B + t * KP;
      std::memcpy(bt, row, K * sizeof(double));
      for (int64_t k = K; k < KP; ++k) bt[k] = NEG_INF;
      const double mb = vmaxp(bt, KP);
      if (!(mb > NEG_INF)) return NEG_INF;
      lp += mb;
      const vd vmb = sp(mb);
      for (int64_t k = 0; k < KP; k += DL) st(bt + k, vexp(ld(bt + k) - vmb));
    }
  }
  auto brow = [&](int64_t t) { return e.btab ? e.btab + e.sym[t] * KP : B + t * KP; };
  // forward, rescaled lazily: a row is normalised (c_t = its sum) only when its mass falls
  // below 2^-64, otherwise c_t = 1. The mass never grows (b <= 1), so the division and the
  // sum are off the step-to-step dependency chain. K=8: ~2x fewer cycles per step than
  // normalising every row.
  const double LOW = 5.421010862427522e-20;  // 2^-64
  double cm = 1.0;  // prod c_t as mantissa * 2^ce
  int64_t ce = 0;
  bool prev_norm = true;
  double s_prev = 1.0;
  for (int64_t t = 0; t < T; ++t) {
    double* at = Al + t * KP;
    const double* bt = brow(t);
    if (t == 0) {
      for (int64_t k = 0; k < KP; ++k) at[k] = m.pi[k] * bt[k];
    } else {
      vecmat(Al + (t - 1) * KP, m.A.data(), K, KP, at);
      for (int64_t k = 0; k < KP; k += DL) st(at + k, ld(at + k) * ld(bt + k));
    }
    double st_ = vsum(at, KP);
    if (!(st_ >= 1e-280) && !prev_norm) {
      // rare: the unnormalised previous row was too small for this step; normalise it, redo
      double* ap = Al + (t - 1) * KP;
      const vd inv = sp(1.0 / s_prev);
      for (int64_t k = 0; k < KP; k += DL) st(ap + k, ld(ap + k) * inv);
      c[t - 1] = s_prev;
      int ex;
      cm = std::frexp(cm * s_prev, &ex);
      ce += ex;
      vecmat(ap, m.A.data(), K, KP, at);
      for (int64_t k = 0; k < KP; k += DL) st(at + k, ld(at + k) * ld(bt + k));
      st_ = vsum(at, KP);
    }
    if (!(st_ > 0.0) || !std::isfinite(st_)) return NEG_INF;
    if (st_ < LOW || t == 0) {
      c[t] = st_;
      const vd inv = sp(1.0 / st_);
      for (int64_t k = 0; k < KP; k += DL) st(at + k, ld(at + k) * inv);
      int ex;
      cm = std::frexp(cm * st_, &ex);
      ce += ex;
      prev_norm = true;
      s_prev = 1.0;
    } else {
      c[t] = 1.0;
      prev_norm = false;
      s_prev = st_;
    }
  }
  // log p = sum log c_t + log(mass of the last row) + sum of the emission shifts
  lp += std::log(cm) + double(ce) * 0.6931471805599453 + std::log(s_prev);
  if (!need_g && !X) return lp;
  // backward: W_t = b_t * beta_t / c_t, beta_{t-1} = A W_t; beta starts at 1 / (mass of the
  // last row) so that alpha_t beta_t sums to 1 and xi needs no further factor
  const double b0 = 1.0 / s_prev;
  for (int64_t k = 0; k < KP; ++k) beta[k] = k < K ? b0 : 0.0;
  for (int64_t t = T - 1; t >= 0; --t) {
    if (need_g) {  // padded vector row in gbuf, then K entries out
      const double* at = Al + t * KP;
      for (int64_t k = 0; k < KP; k += DL) st(gbuf + k, ld(at + k) * ld(beta + k));
      const vd inv = sp(1.0 / vsum(gbuf, KP));
      for (int64_t k = 0; k < KP; k += DL) st(gbuf + k, ld(gbuf + k) * inv);
      if (post) std::memcpy(post + t * K, gbuf, K * sizeof(double));
      use_gamma(gbuf, t, K, e, acc);
    }
    if (t > 0) {
      double* w = B + t * KP;
      const double* bt = brow(t);
      const vd ic = sp(1.0 / c[t]);
      for (int64_t k = 0; k < KP; k += DL) st(w + k, ld(bt + k) * ld(beta + k) * ic);
      vecmat(w, m.AT.data(), K, KP, beta);
    }
  }
  if (X && T > 1) xi_accum(Al, B + KP, T - 1, K, KP, X);
  return lp;
}

// One sequence, log space.
double fb_log(const Model& m, const Emis& e, int64_t T, double* post, const Acc& acc) {
  double* X = acc.X;
  const bool need_g = post || acc.cnt || acc.start;
  double* gbuf = grow(tl.v4, m.KP);
  const int64_t K = m.K, KP = m.KP;
  double* LA = grow(tl.a, T * KP);  // log alpha
  double* U = grow(tl.b, T * KP);   // exp(log alpha - L_t)
  double* L = grow(tl.c, T);        // logsumexp of log alpha_t
  double* lb = grow(tl.v1, KP);
  double* tmp = grow(tl.v2, KP);
  for (int64_t t = 0; t < T; ++t) {
    const double* row = e.row(t);
    double* la = LA + t * KP;
    double* u = U + t * KP;
    if (t == 0) {
      for (int64_t k = 0; k < KP; k += DL) st(la + k, vlog(ld(m.pi.data() + k)));
      for (int64_t k = 0; k < K; ++k) la[k] += row[k];
    } else {
      vecmat(U + (t - 1) * KP, m.A.data(), K, KP, tmp);
      for (int64_t k = 0; k < KP; k += DL) st(la + k, vlog(ld(tmp + k)) + L[t - 1]);
      for (int64_t k = 0; k < K; ++k) la[k] += row[k];
    }
    for (int64_t k = K; k < KP; ++k) la[k] = NEG_INF;
    const double mx = vmaxp(la, KP);
    if (!(mx > NEG_INF) || std::isnan(mx)) return NEG_INF;
    const vd vmx = sp(mx);
    for (int64_t k = 0; k < KP; k += DL) st(u + k, vexp(ld(la + k) - vmx));
    const double s = vsum(u, KP);
    const vd inv = sp(1.0 / s);
    for (int64_t k = 0; k < KP; k += DL) st(u + k, ld(u + k) * inv);
    L[t] = mx + std::log(s);
  }
  const double lp = L[T - 1];
  if (!need_g && !X) return lp;
  double* W = X ? grow(tl.d, T * KP) : nullptr;
  double* v = grow(tl.v3, KP);
  for (int64_t k = 0; k < KP; ++k) lb[k] = k < K ? 0.0 : NEG_INF;
  for (int64_t t = T - 1; t >= 0; --t) {
    if (need_g) {
      const double* la = LA + t * KP;
      for (int64_t k = 0; k < KP; k += DL) st(v + k, ld(la + k) + ld(lb + k));
      const vd vmx = sp(vmaxp(v, KP));
      for (int64_t k = 0; k < KP; k += DL) st(v + k, vexp(ld(v + k) - vmx));
      const vd inv = sp(1.0 / vsum(v, KP));
      for (int64_t k = 0; k < KP; k += DL) st(gbuf + k, ld(v + k) * inv);
      if (post) std::memcpy(post + t * K, gbuf, K * sizeof(double));
      use_gamma(gbuf, t, K, e, acc);
    }
    if (t > 0) {
      const double* row = e.row(t);
      for (int64_t k = 0; k < K; ++k) v[k] = row[k] + lb[k];
      for (int64_t k = K; k < KP; ++k) v[k] = NEG_INF;
      const double mv = vmaxp(v, KP);
      const vd vmv = sp(mv);
      for (int64_t k = 0; k < KP; k += DL) st(v + k, vexp(ld(v + k) - vmv));
      if (W) {
        const vd f = sp(std::exp(mv + L[t - 1] - lp));
        double* w = W + t * KP;
        for (int64_t k = 0; k < KP; k += DL) st(w + k, ld(v + k) * f);
      }
      vecmat(v, m.AT.data(), K, KP, tmp);
      for (int64_t k = 0; k < KP; k += DL) st(lb + k, vlog(ld(tmp + k)) + mv);
      for (int64_t k = K; k < KP; ++k) lb[k] = NEG_INF;
    }
  }
  if (X && T > 1) xi_accum(U, W + KP, T - 1, K, KP, X);
  return lp;
}

Model make_model(int64_t K, const double* startprob, const double* transmat) {
  Model m;
  m.K = K;
  m.KP = (K + DL - 1) / DL * DL;
  const int64_t KP = m.KP;
  m.A.assign(KP * KP, 0.0);
  m.AT.assign(KP * KP, 0.0);
  m.pi.assign(KP, 0.0);
  for (int64_t i = 0; i < K; ++i) {
    m.pi[i] = startprob[i];
    for (int64_t j = 0; j < K; ++j) {
      const double a = transmat[i * K + j];
      m.A[i * KP + j] = a;
      m.AT[j * KP + i] = a;
    }
  }
  return m;
}

// Contiguous sequence groups balanced by frame count; depends only on offsets and sizes.
// per_group: doubles of partial sums a group holds (groups are capped to ~256 MiB of them).
std::vector<int64_t> make_groups(int64_t S, const int64_t* off, int64_t per_group) {
  const int64_t cap = std::max<int64_t>(1, (int64_t(1) << 25) / std::max<int64_t>(1, per_group));
  const int64_t G = std::min<int64_t>(std::min<int64_t>(S, G_MAX), cap);
  std::vector<int64_t> gb(G + 1, S);
  gb[0] = 0;
  const double N = double(off[S]);
  int64_t s = 0;
  for (int64_t g = 1; g < G; ++g) {
    const double target = N * double(g) / double(G);
    while (s < S && double(off[s]) < target) ++s;
    gb[g] = std::max(s, gb[g - 1]);
  }
  gb[G] = S;
  return gb;
}

void forward_backward(const HmmFbArgs& a) {
  const Model m = make_model(a.K, a.startprob, a.transmat);
  const int64_t K = a.K, KP = m.KP, M = a.sym ? a.n_symbols : 0;
  const std::vector<int64_t> gb = make_groups(a.S, a.offsets, K * KP + M * K + K);
  const int64_t G = int64_t(gb.size()) - 1;
  const int64_t gsz = (a.xi ? K * KP : 0) + (a.counts ? M * K : 0) + (a.start ? K : 0);
  std::vector<double> part(size_t(G * gsz), 0.0);
  // categorical emissions in scaled space: exp(table - row max) once per symbol, not per frame
  std::vector<double> btab, mbtab;
  if (a.sym && !a.log_space) {
    btab.assign(M * KP, 0.0);
    mbtab.assign(M, NEG_INF);
    for (int64_t r = 0; r < M; ++r) {
      const double* row = a.logb + r * K;
      const double mb = max_k(row, K);
      mbtab[r] = mb;
      double* bt = btab.data() + r * KP;
      for (int64_t k = 0; k < KP; ++k) bt[k] = (k < K && mb > NEG_INF) ? row[k] - mb : NEG_INF;
      for (int64_t k = 0; k < KP; k += DL) st(bt + k, vexp(ld(bt + k)));
    }
  }
  parallel_for(G, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      Acc acc;
      double* p = part.data() + g * gsz;
      if (a.xi) { acc.X = p; p += K * KP; }
      if (a.counts) { acc.cnt = p; p += M * K; }
      if (a.start) acc.start = p;
      for (int64_t s = gb[g]; s < gb[g + 1]; ++s) {
        const int64_t o = a.offsets[s], T = a.offsets[s + 1] - o;
        double* post = a.post ? a.post + o * K : nullptr;
        Emis e{a.sym ? a.logb : a.logb + o * K, a.sym ? a.sym + o : nullptr, K};
        if (!btab.empty()) {
          e.btab = btab.data();
          e.mbtab = mbtab.data();
        }
        // accumulators are only touched after a successful forward pass
        const double lp = a.log_space ? fb_log(m, e, T, post, acc) : fb_scaled(m, e, T, post, acc);
        a.logprob[s] = lp;
        if (!(lp > NEG_INF)) {
          a.logprob[s] = NEG_INF;
          if (post) std::fill(post, post + T * K, std::numeric_limits<double>::quiet_NaN());
        }
      }
    }
  });
  // fixed-order reduction over groups
  if (a.xi) {
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < K; ++j) {
        double acc = 0.0;
        for (int64_t g = 0; g < G; ++g) acc += part[g * gsz + i * KP + j];
        a.xi[i * K + j] = acc * a.transmat[i * K + j];
      }
  }
  const int64_t oc = a.xi ? K * KP : 0, os = oc + (a.counts ? M * K : 0);
  if (a.counts)
    for (int64_t i = 0; i < M * K; ++i) {
      double acc = 0.0;
      for (int64_t g = 0; g < G; ++g) acc += part[g * gsz + oc + i];
      a.counts[i] = acc;
    }
  if (a.start)
    for (int64_t k = 0; k < K; ++k) {
      double acc = 0.0;
      for (int64_t g = 0; g < G; ++g) acc += part[g * gsz + os + k];
      a.start[k] = acc;
    }
}

void viterbi_one(const Model& m, const Emis& e, int64_t T, double* lp_out, int64_t* states) {
  const int64_t K = m.K, KP = m.KP;
  double* d0 = grow(tl.v1, KP);
  double* d1 = grow(tl.v2, KP);
  if (tl.psi.size() < size_t(T * KP)) tl.psi.assign(T * KP, 0);
  int64_t* psi = tl.psi.data();
  const double* row0 = e.row(0);
  for (int64_t k = 0; k < KP; ++k) d0[k] = k < K ? m.logpi[k] + row0[k] : NEG_INF;
  for (int64_t t = 1; t < T; ++t) {
    const double* row = e.row(t);
    int64_t j = 0;
    // 4 independent max/argmax chains per pass over i (compare + blend latency hidden).
    for (; j + 4 * DL <= KP; j += 4 * DL) {
      vd c0 = sp(NEG_INF), c1 = c0, c2 = c0, c3 = c0;
      vl g0{}, g1{}, g2{}, g3{};
      const double* r = m.logA.data() + j;
      for (int64_t i = 0; i < K; ++i, r += KP) {
        const vd di = sp(d0[i]);
        const vl vi = vl{} + i;
        const vd x0 = di + ld(r), x1 = di + ld(r + DL), x2 = di + ld(r + 2 * DL), x3 = di + ld(r + 3 * DL);
        const vl m0 = x0 >= c0, m1 = x1 >= c1, m2 = x2 >= c2, m3 = x3 >= c3;
        c0 = m0 ? x0 : c0; c1 = m1 ? x1 : c1; c2 = m2 ? x2 : c2; c3 = m3 ? x3 : c3;
        g0 = m0 ? vi : g0; g1 = m1 ? vi : g1; g2 = m2 ? vi : g2; g3 = m3 ? vi : g3;
      }
      st(d1 + j, c0); st(d1 + j + DL, c1); st(d1 + j + 2 * DL, c2); st(d1 + j + 3 * DL, c3);
      vl_u* q = reinterpret_cast<vl_u*>(psi + t * KP + j);
      q[0] = g0; q[1] = g1; q[2] = g2; q[3] = g3;
    }
    for (; j < KP; j += DL) {
      vd acc = sp(NEG_INF);
      vl arg{};
      const double* r = m.logA.data() + j;
      for (int64_t i = 0; i < K; ++i, r += KP) {
        const vd cand = sp(d0[i]) + ld(r);
        const vl gt = cand >= acc;
        acc = gt ? cand : acc;
        arg = gt ? vl{} + i : arg;
      }
      st(d1 + j, acc);
      *reinterpret_cast<vl_u*>(psi + t * KP + j) = arg;
    }
    for (int64_t k = 0; k < K; ++k) d1[k] += row[k];
    for (int64_t k = K; k < KP; ++k) d1[k] = NEG_INF;
    std::swap(d0, d1);
  }
  int64_t best = 0;
  for (int64_t k = 1; k < K; ++k)
    if (d0[k] > d0[best]) best = k;
  *lp_out = d0[best];
  states[T - 1] = best;
  for (int64_t t = T - 1; t > 0; --t) {
    best = psi[t * KP + best];
    states[t - 1] = best;
  }
}

void viterbi(const HmmViterbiArgs& a) {
  Model m;
  m.K = a.K;
  m.KP = (a.K + DL - 1) / DL * DL;
  m.logA.assign(m.KP * m.KP, NEG_INF);
  m.logpi.assign(m.KP, NEG_INF);
  for (int64_t i = 0; i < a.K; ++i) {
    m.logpi[i] = a.log_startprob[i];
    for (int64_t j = 0; j < a.K; ++j) m.logA[i * m.KP + j] = a.log_transmat[i * a.K + j];
  }
  parallel_for(a.S, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t o = a.offsets[s], T = a.offsets[s + 1] - o;
      Emis e{a.sym ? a.logb : a.logb + o * a.K, a.sym ? a.sym + o : nullptr, a.K};
      viterbi_one(m, e, T, a.logprob + s, a.states + o);
    }
  });
}

void loglik_diag(int64_t N, int64_t D, int64_t K, const double* X, const double* means, const double* prec,
                 const double* cst, double* out) {
  const int64_t KP = (K + DL - 1) / DL * DL;
  std::vector<double> muT(D * KP, 0.0), pT(D * KP, 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t d = 0; d < D; ++d) {
      muT[d * KP + k] = means[k * D + d];
      pT[d * KP + k] = prec[k * D + d];
    }
  parallel_for(N, 512, [&](int64_t t0, int64_t t1) {
    double* acc = grow(tl.v1, KP);
    for (int64_t t = t0; t < t1; ++t) {
      const double* x = X + t * D;
      for (int64_t k = 0; k < KP; ++k) acc[k] = 0.0;
      for (int64_t d = 0; d < D; ++d) {
        const vd xd = sp(x[d]);
        const double* mu = muT.data() + d * KP;
        const double* p = pT.data() + d * KP;
        for (int64_t k = 0; k < KP; k += DL) {
          const vd df = xd - ld(mu + k);
          st(acc + k, ld(acc + k) + df * df * ld(p + k));
        }
      }
      double* o = out + t * K;
      for (int64_t k = 0; k < K; ++k) o[k] = cst[k] - 0.5 * acc[k];
    }
  });
}

void loglik_full(int64_t N, int64_t D, int64_t K, const double* X, const double* means, const double* pchol,
                 const double* cst, double* out) {
  parallel_for(N, 256, [&](int64_t t0, int64_t t1) {
    double* df = grow(tl.v1, D);
    for (int64_t t = t0; t < t1; ++t) {
      const double* x = X + t * D;
      for (int64_t k = 0; k < K; ++k) {
        const double* mu = means + k * D;
        const double* P = pchol + k * D * D;
        for (int64_t d = 0; d < D; ++d) df[d] = x[d] - mu[d];
        double q = 0.0;
        for (int64_t r = 0; r < D; ++r) {
          double y = 0.0;
          for (int64_t c = 0; c <= r; ++c) y += P[r * D + c] * df[c];
          q += y * y;
        }
        out[t * K + k] = cst[k] - 0.5 * q;
      }
    }
  });
}

}  // namespace

const HmmKernels& hmm_kernels() {
  static const HmmKernels k{forward_backward, viterbi, loglik_diag, loglik_full};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
