// conv_depthwise.cpp: direct depthwise conv2d kernels, forward and backward, both layouts:
// groups == C and OC = m * C (output channel o reads input channel o / m), any kernel size,
// stride, dilation and zero padding. Compiled once per ISA like the rest of csrc/cpu/.
//   channels last (N, H, W, C): vectors run over channels. y and grad_x are gathers: output
//     pixels whose taps all lie inside the input go 4 at a time, each weight vector loaded
//     once for the 4; edge pixels use a list of their in-bounds taps. The forward of kernel
//     widths 5 and 7 (and 3 on rows of at most 14 pixels or channels within one vector)
//     slides along the row instead: 7 or 8 pixels a block, each input column loaded once for
//     every tap that reads it, the edges read as zeros (slide_block). Tasks take runs of
//     output rows (row_grain), scan their input rows first (scan_rows), and an output that
//     with its input passes the cache goes out by non-temporal stores (stream_ok). grad_w and
//     grad_b sum chunks of output rows into partial sums (the taps of one kernel row held in registers
//     along an image row), added up in chunk order. m > 1 runs on a copy of x with each
//     channel repeated m times.
//   channels first (N, C, H, W), the shapes the sliding rows take (nchw_tiles_ok): the forward
//     runs them on channels-last tiles of each image's block of channels (transposed in, the
//     sliding kernels, transposed out).
//   channels first (N, C, H, W), otherwise: vectors run over output width. Each input plane is copied
//     into a zero-padded, stride-phase-split buffer (column i of phase q holds padded column
//     i * sw + q), so every tap is a contiguous load; blocks of 4 vectors along a row, or 4
//     rows of one vector for narrow planes. grad_x is the stride-1 conv, flipped kernel, of gy
//     spread out by the stride; grad_w and grad_b run per output channel over the images in
//     order.
// No result depends on the thread count: every output element is summed in an order set by
// the shape alone (grad_w: fixed chunks, added in chunk order).
//
// Not here: the choice of this kernel for a shape (conv_plan in conv.cpp), groups between 1
// and C (conv_im2col.cpp), validation (bindings/conv.cpp), float64 (NumPy reference).
// Tests: tests/test_conv_depthwise.py (torch and the _naive kernels as oracles, every ISA
// through PYAIML_ISA), tests/test_conv_algorithms.py.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <vector>

#include "common/parallel.h"
#include "common/transpose.h"
#include "cpu/conv_common.h"
#include "cpu/finite.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {
namespace {

// Loads and stores of a lane group (V = vf; a channel tail shorter than a vector goes through
// the masked *_tail functions).
template <class V> inline V ld(const float* p);
template <> inline vf ld<vf>(const float* p) { return loadu(p); }
inline void st(float* p, vf v) { storeu(p, v); }
// nt: a non-temporal store (p vector-aligned: the callers check y and OC).
inline void st(float* p, vf v, bool nt) {
  if (nt) stream(p, v);
  else storeu(p, v);
}
inline vf relu_of(vf v) { return vmax(v, vf{}); }
template <class V> inline V zero() { return V{}; }

// out[c] = init[c] + sum_t in[off[t] + c] * wk[wo[t] + c] for the NB lane groups at c (V wide).
template <class V, int NB>
inline void taps_block(const float* in, const float* wk, const int64_t* off, const int64_t* wo, int64_t nt,
                       const float* init, bool relu, float* out) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  V acc[NB];
  for (int i = 0; i < NB; ++i) acc[i] = init ? ld<V>(init + i * L) : zero<V>();
  for (int64_t t = 0; t < nt; ++t) {
    const float* a = in + off[t];
    const float* b = wk + wo[t];
    for (int i = 0; i < NB; ++i) acc[i] += ld<V>(a + i * L) * ld<V>(b + i * L);
  }
  for (int i = 0; i < NB; ++i) st(out + i * L, relu ? relu_of(acc[i]) : acc[i]);
}

// taps_block for the last n < VL channels: one masked vector (the lanes past n neither read nor
// written). Lane by lane, a channel count like MobileNet's 72, 88, 40 or 24 (a vector and a
// half-vector tail on AVX-512) spent most of its time in the tail: N8 C72 56x56 k3 ~0.9 ms
// against torch's 0.3-0.45.
inline void taps_tail(const float* in, const float* wk, const int64_t* off, const int64_t* wo, int64_t nt,
                      const float* init, bool relu, float* out, int n) {
  vf acc = init ? loadu_n(init, n) : vf{};
  for (int64_t t = 0; t < nt; ++t) acc += loadu_n(in + off[t], n) * loadu_n(wk + wo[t], n);
  storeu_n(out, relu ? relu_of(acc) : acc, n);
}

// One pixel over all Cx channels (taps_block in blocks of 4 vectors, then vectors, then a
// masked vector).
inline void taps_pixel(const float* in, const float* wk, const int64_t* off, const int64_t* wo, int64_t nt,
                       const float* init, bool relu, float* out, int64_t Cx) {
  int64_t c = 0;
  for (; c + 4 * VL <= Cx; c += 4 * VL)
    taps_block<vf, 4>(in + c, wk + c, off, wo, nt, init ? init + c : nullptr, relu, out + c);
  // the last 1-3 vectors in one block: more independent sums than one at a time
  if (c + 3 * VL <= Cx) {
    taps_block<vf, 3>(in + c, wk + c, off, wo, nt, init ? init + c : nullptr, relu, out + c);
    c += 3 * VL;
  } else if (c + 2 * VL <= Cx) {
    taps_block<vf, 2>(in + c, wk + c, off, wo, nt, init ? init + c : nullptr, relu, out + c);
    c += 2 * VL;
  } else if (c + VL <= Cx) {
    taps_block<vf, 1>(in + c, wk + c, off, wo, nt, init ? init + c : nullptr, relu, out + c);
    c += VL;
  }
  if (c < Cx) taps_tail(in + c, wk + c, off, wo, nt, init ? init + c : nullptr, relu, out + c, int(Cx - c));
}

// Weights (OC, 1, KH, KW) -> [k][o].
std::vector<float> taps_major(const ConvShape& s, const float* w) {
  const int64_t KHW = s.KH * s.KW;
  std::vector<float> d(KHW * s.OC);
  for (int64_t o = 0; o < s.OC; ++o)
    for (int64_t k = 0; k < KHW; ++k) d[k * s.OC + o] = w[o * KHW + k];
  return d;
}

// x (N, H, W, C) with each channel repeated m times: (N, H, W, C * m), channel o = x's o / m.
std::vector<float> expand_channels(const ConvShape& s, const float* x, int64_t m) {
  const int64_t P = s.N * s.H * s.W, C = s.C;
  std::vector<float> e(P * C * m);
  parallel_for(P, 1024, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; ++p)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < m; ++j) e[(p * C + c) * m + j] = x[p * C + c];
  });
  return e;
}

thread_local std::vector<float> t_dw, t_dw2;
thread_local std::vector<int64_t> t_off;

// ---- channels last ----

// P neighbouring pixels whose taps all lie inside the input, NB lane groups from channel c:
// out(p)[c] = init[c] + sum over kernel rows r < nr and kw < KW of
// a[r][p * ps + kw * ks + c] * wr[r][kw * OC + c]. Each weight vector loaded once serves the P
// pixels (1 + 1/P loads per multiply-add instead of 2).
template <class V, int NB, int P>
inline void run_block(const float* const* a, const float* const* wr, int64_t nr, int64_t KW, int64_t ks, int64_t ps,
                      int64_t OC, int64_t c, const float* init, bool relu, float* out, bool nt) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  V acc[P][NB];
  for (int p = 0; p < P; ++p)
    for (int i = 0; i < NB; ++i) acc[p][i] = init ? ld<V>(init + c + i * L) : zero<V>();
  for (int64_t r = 0; r < nr; ++r) {
    const float* ar = a[r] + c;
    const float* wk = wr[r] + c;
    for (int64_t kw = 0; kw < KW; ++kw) {
      V wv[NB];
      for (int i = 0; i < NB; ++i) wv[i] = ld<V>(wk + kw * OC + i * L);
      const float* ak = ar + kw * ks;
      for (int p = 0; p < P; ++p)
        for (int i = 0; i < NB; ++i) acc[p][i] += wv[i] * ld<V>(ak + p * ps + i * L);
    }
  }
  for (int p = 0; p < P; ++p)
    for (int i = 0; i < NB; ++i) st(out + p * OC + c + i * L, relu ? relu_of(acc[p][i]) : acc[p][i], nt);
}

// run_block for the last n < VL channels from c, one masked vector (see taps_tail).
template <int P>
inline void run_tail(const float* const* a, const float* const* wr, int64_t nr, int64_t KW, int64_t ks, int64_t ps,
                     int64_t OC, int64_t c, const float* init, bool relu, float* out, int n) {
  vf acc[P];
  for (int p = 0; p < P; ++p) acc[p] = init ? loadu_n(init + c, n) : vf{};
  for (int64_t r = 0; r < nr; ++r) {
    const float* ar = a[r] + c;
    const float* wk = wr[r] + c;
    for (int64_t kw = 0; kw < KW; ++kw) {
      const vf wv = loadu_n(wk + kw * OC, n);
      const float* ak = ar + kw * ks;
      for (int p = 0; p < P; ++p) acc[p] += wv * loadu_n(ak + p * ps, n);
    }
  }
  for (int p = 0; p < P; ++p) storeu_n(out + p * OC + c, relu ? relu_of(acc[p]) : acc[p], n);
}

// run_block over all OC channels of P pixels.
template <int P>
void run_pixels(const float* const* a, const float* const* wr, int64_t nr, int64_t KW, int64_t ks, int64_t ps,
                int64_t OC, const float* init, bool relu, float* out, bool nt) {
  constexpr int NB = VL == 16 ? 4 : 2;
  int64_t c = 0;
  for (; c + NB * VL <= OC; c += NB * VL) run_block<vf, NB, P>(a, wr, nr, KW, ks, ps, OC, c, init, relu, out, nt);
  // the last 1-3 vectors in one block (C240 on AVX-512: 4+4+4+3 rather than 4+4+4+1+1+1)
  const int64_t rv = (OC - c) / VL;
  if (NB > 2 && rv == 3) {
    run_block<vf, 3, P>(a, wr, nr, KW, ks, ps, OC, c, init, relu, out, nt);
    c += 3 * VL;
  } else if (NB > 1 && rv == 2) {
    run_block<vf, 2, P>(a, wr, nr, KW, ks, ps, OC, c, init, relu, out, nt);
    c += 2 * VL;
  }
  for (; c + VL <= OC; c += VL) run_block<vf, 1, P>(a, wr, nr, KW, ks, ps, OC, c, init, relu, out, nt);
  if (c < OC) run_tail<P>(a, wr, nr, KW, ks, ps, OC, c, init, relu, out, int(OC - c));
}

// Output columns [owa, owb) of a row whose taps all lie inside the input, in blocks of 4 then
// 1: a[r] is kernel row r's input for column owa at tap kw = 0; a pixel further is ps on.
void run_row(const float* const* a0, const float* const* wr, int64_t nr, int64_t KW, int64_t ks, int64_t ps,
             int64_t OC, int64_t owa, int64_t owb, const float* init, bool relu, float* yrow, bool nt = false) {
  const float* a[64];
  for (int64_t ow = owa; ow < owb;) {
    const int P = owb - ow >= 4 ? 4 : 1;
    for (int64_t r = 0; r < nr; ++r) a[r] = a0[r] + (ow - owa) * ps;
    if (P == 4) run_pixels<4>(a, wr, nr, KW, ks, ps, OC, init, relu, yrow + ow * OC, nt);
    else run_pixels<1>(a, wr, nr, KW, ks, ps, OC, init, relu, yrow + ow * OC, nt);
    ow += P;
  }
}

// The column range [a, b) of outputs whose taps all lie inside the input along one axis
// (output o reads o * st - p + k * d for k < K); a == b when none.
void inner_range(int64_t O, int64_t I, int64_t K, int64_t st, int64_t p, int64_t d, int64_t& a, int64_t& b) {
  a = (p + st - 1) / st;
  const int64_t last = I - 1 - (K - 1) * d + p;  // o * st <= last
  b = last < 0 ? 0 : std::min(O, last / st + 1);
  if (a > b) a = b;
}

// The kernel rows of output row oh that lie inside the input: for each, the input row's
// pointer (column `col`, channel 0) and the row's weights ([kw][o]). Returns their count.
int64_t kernel_rows(const ConvShape& s, int64_t oh, const float* xn, const float* wk, int64_t col,
                    const float** a, const float** wr) {
  int64_t nr = 0;
  for (int64_t kh = 0; kh < s.KH; ++kh) {
    const int64_t ih = oh * s.sh - s.pt + kh * s.dh;
    if (ih < 0 || ih >= s.H) continue;
    a[nr] = xn + (ih * s.W + col) * s.OC;
    wr[nr++] = wk + kh * s.KW * s.OC;
  }
  return nr;
}

// ---- channels last, sliding rows (kernel widths 3, 5, 7; stride 1 or 2; dilation 1 along W) ----
// P output pixels of one row, NB vectors of channels (the last masked to `tail` lanes when
// TAIL): each input column the P pixels read is loaded once per kernel row and serves every
// (pixel, tap) pair that reads it, (P - 1) * S + KW loads for P * KW multiply-adds (run_block
// loads one per multiply-add), with the kernel row's KW weight vectors held in registers.
// Columns outside the input read as zeros, so the row's edge pixels take the same path.
// a[r]: kernel row r's input row at channel c (column 0); iw0: the input column of pixel 0's
// tap 0 (may be negative); y: pixel 0's output at channel c.
template <int P, int KW, int S, int NB, bool TAIL, bool EDGE>
void slide_block(const float* const* a, const float* const* wr, int64_t nr, int64_t W, int64_t C, int64_t iw0,
                 const float* bias, bool relu, float* y, int tail, bool nt) {
  constexpr int J = (P - 1) * S + KW;
  vf acc[P][NB];
#pragma GCC unroll 4
  for (int i = 0; i < NB; ++i) {
    const vf b0 = !bias ? vf{} : (TAIL && i == NB - 1) ? loadu_n(bias + i * VL, tail) : loadu(bias + i * VL);
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) acc[p][i] = b0;
  }
  for (int64_t r = 0; r < nr; ++r) {
    vf wv[KW][NB];
#pragma GCC unroll 8
    for (int k = 0; k < KW; ++k)
#pragma GCC unroll 4
      for (int i = 0; i < NB; ++i)
        wv[k][i] = (TAIL && i == NB - 1) ? loadu_n(wr[r] + k * C + i * VL, tail) : loadu(wr[r] + k * C + i * VL);
    const float* ar = a[r];
#pragma GCC unroll 32
    for (int j = 0; j < J; ++j) {
      const int64_t iw = iw0 + j;
      vf xv[NB];
      const bool in = !EDGE || (iw >= 0 && iw < W);
#pragma GCC unroll 4
      for (int i = 0; i < NB; ++i)
        xv[i] = !in ? vf{} : (TAIL && i == NB - 1) ? loadu_n(ar + iw * C + i * VL, tail) : loadu(ar + iw * C + i * VL);
#pragma GCC unroll 8
      for (int k = 0; k < KW; ++k) {
        if (j - k < 0 || (j - k) % S != 0 || (j - k) / S >= P) continue;
        const int p = (j - k) / S;
#pragma GCC unroll 4
        for (int i = 0; i < NB; ++i) acc[p][i] += xv[i] * wv[k][i];
      }
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int i = 0; i < NB; ++i) {
      const vf v = relu ? vmax(acc[p][i], vf{}) : acc[p][i];
      if (TAIL && i == NB - 1)
        storeu_n(y + p * C + i * VL, v, tail);
      else
        st(y + p * C + i * VL, v, nt);
    }
}

using SlideFn = void (*)(const float* const*, const float* const*, int64_t, int64_t, int64_t, int64_t, const float*,
                         bool, float*, int, bool);

// Vectors of channels per block: the P sums, KW weights and one input per vector within the
// 32 zmm registers (two vectors) or 16 ymm / xmm (one).
constexpr int kSlideNB = VL == 16 ? 2 : 1;

// The kernels of one (P, KW, S): [0] NB vectors, [1] one vector, [2] one masked vector;
// [3 + i] the same for blocks that read past the input's left or right edge.
template <int P, int KW, int S>
constexpr std::array<SlideFn, 6> slide_set() {
  return {&slide_block<P, KW, S, kSlideNB, false, false>, &slide_block<P, KW, S, 1, false, false>,
          &slide_block<P, KW, S, 1, true, false>,         &slide_block<P, KW, S, kSlideNB, false, true>,
          &slide_block<P, KW, S, 1, false, true>,         &slide_block<P, KW, S, 1, true, true>};
}

template <int P>
const std::array<SlideFn, 6>* slide_sets(int64_t KW, int64_t S) {
  static constexpr std::array<SlideFn, 6> t[3][2] = {{slide_set<P, 3, 1>(), slide_set<P, 3, 2>()},
                                                    {slide_set<P, 5, 1>(), slide_set<P, 5, 2>()},
                                                    {slide_set<P, 7, 1>(), slide_set<P, 7, 2>()}};
  return &t[(KW - 3) / 2][S - 1];
}

// Pixels per block: 8, or 7 when that tiles the row with less overlap (OW 14, 28: 7 exactly);
// the last block of a row starts at OW - P, recomputing a few pixels, so OW >= 7 is needed.
int64_t slide_p(int64_t OW) { return ((OW + 7) / 8) * 8 - OW <= ((OW + 6) / 7) * 7 - OW ? 8 : 7; }

// Where the sliding rows beat run_row (N32, 2 threads, AVX-512, ms, sliding vs run_row):
// k5 s1 C240 14x14 0.85 vs 1.38, C120 28x28 1.68 vs 2.58; k5 s2 C576 14x14 0.62 vs 0.71, C72
// 56x56 2.85 vs 3.05; k7 s1 C144 28x28 3.47 vs 4.90; k3 s1 C576 7x7 0.13 vs 0.22, C240 14x14
// 0.30 vs 0.35 (run_row's edge columns go one tap at a time: 2 of 7 or 14 columns). Not for
// k3 on wider rows: C96 28x28 0.98 vs 0.62, 56x56 6.3 vs 5.2 (memory-bound there, and
// run_row's 4-pixel blocks read less per output row) -- unless the channels fill one vector at
// most: run_row then keeps 4 sums, loads one input per multiply-add (N8, k3, kernel alone, us,
// sliding vs run_row: C16 56x56 s1 101-116 vs 232-259, C16 112x112 s2 117-143 vs 189-195; C64
// 56x56 s2 216-280 vs 122-141, so wider channel counts stay).
bool slide_ok(const ConvShape& s) {
  return (s.KW == 3 || s.KW == 5 || s.KW == 7) && (s.sw == 1 || s.sw == 2) && s.dw == 1 && s.OW >= 7 &&
         s.KH <= 64 && (s.KW >= 5 || s.OW <= 14 || s.OC <= VL);
}

// The channels-last forward's stores go out non-temporal (kStreamBytes): input and output
// past the cache, and every vector of y aligned (y itself, OC whole vectors).
bool stream_ok(const ConvShape& s, const float* y) {
  return (s.N * s.H * s.W + s.N * s.OH * s.OW) * s.OC * 4 >= kStreamBytes && s.OC % VL == 0 && stream_aligned(y);
}

// Output rows per task of the channels-last forward: about 2^16 multiply-adds, and at least 8
// rows while that leaves 4 tasks a thread. Consecutive rows share KH - 1 input rows, which a
// task then finds in its own L2; tasks of one row dealt the rows out in turn, so each thread
// read nearly every input row (k3 s1 C96 56x56, N32: 3.8-3.9 -> 2.9-3.4 ms).
int64_t row_grain(const ConvShape& s) {
  const int64_t g = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, s.OW * s.OC * s.KH * s.KW));
  return std::max(g, std::min<int64_t>(8, s.N * s.OH / (4 * get_num_threads())));
}

// One linear pass over input rows [oh * sh, (oh + 1) * sh) of an image (to its last row for the
// last output row) before output row oh is computed: each input row is scanned once, by the
// task of an output row that reads it or the rows next to it. The pass stages the rows in
// L1/L2 for the taps' strided reads (at stride 2 a tap touches every other pixel of a row:
// N32 C96 56x56 k3 s2, interleaved with torch, 2.3-2.4 -> 1.2-1.4 ms; s1 about 5% faster;
// prefetch instructions over the same lines gained nothing), and it is the NaN/inf check of
// x: sets *bad when a row is not finite.
inline void scan_rows(const ConvShape& s, const float* xn, int64_t oh, std::atomic<bool>* bad) {
  const int64_t a = std::min(s.H, oh * s.sh), e = oh == s.OH - 1 ? s.H : std::min(s.H, (oh + 1) * s.sh);
  if (e > a && !finite_kernels().f32(xn + a * s.W * s.OC, (e - a) * s.W * s.OC))
    bad->store(true, std::memory_order_relaxed);
}

// One output row by slide_block: pixel blocks outer, channel blocks inner (a block's input
// columns, KH rows x P * S pixels x C channels, stay in L1 while its channel blocks run).
// a0 / wr0: the nr kernel rows' input (column 0, channel 0) and weights ([kw][c]); C, the
// channel count, is also the pixel stride of input and output and the tap stride of the
// weights; b: the bias of channel 0 or null; yrow: the row's output.
void slide_row(const ConvShape& s, const std::array<SlideFn, 6>& fs, int64_t P, const float* const* a0,
               const float* const* wr0, int64_t nr, int64_t C, const float* b, bool relu, float* yrow, bool nt) {
  for (int64_t ow = 0; ow < s.OW; ow += P) {
    const int64_t o = std::min(ow, s.OW - P), iw0 = o * s.sw - s.pl;
    const int edge = iw0 < 0 || iw0 + (P - 1) * s.sw + s.KW > s.W ? 3 : 0;
    for (int64_t c = 0; c < C;) {
      const int64_t left = C - c;
      const int which = left >= kSlideNB * VL ? 0 : left >= VL ? 1 : 2;
      const int64_t width = which == 0 ? kSlideNB * VL : which == 1 ? VL : left;
      const float* a[64];
      const float* wr[64];
      for (int64_t q = 0; q < nr; ++q) {
        a[q] = a0[q] + c;
        wr[q] = wr0[q] + c;
      }
      fs[which + edge](a, wr, nr, s.W, C, iw0, b ? b + c : nullptr, relu, yrow + o * C + c, int(width), nt);
      c += width;
    }
  }
}

// y (N, OH, OW, OC) from xe (N, H, W, OC), every pixel by slide_block; bad: see scan_rows.
void fwd_nhwc_slide(const ConvShape& s, const float* xe, const float* wk, const float* b, bool relu, float* y,
                    std::atomic<bool>* bad) {
  std::atomic<bool> unused{false};
  if (!bad) bad = &unused;
  const int64_t OC = s.OC, P = slide_p(s.OW);
  const bool nt = stream_ok(s, y);
  const std::array<SlideFn, 6>& fs = *(P == 8 ? slide_sets<8>(s.KW, s.sw) : slide_sets<7>(s.KW, s.sw));
  const int64_t grain = row_grain(s);
  parallel_for(s.N * s.OH, grain, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n = r / s.OH, oh = r % s.OH;
      const float* xn = xe + n * s.H * s.W * OC;
      float* yrow = y + r * s.OW * OC;
      scan_rows(s, xn, oh, bad);
      const float* a0[64];
      const float* wr0[64];
      const int64_t nr = kernel_rows(s, oh, xn, wk, 0, a0, wr0);
      slide_row(s, fs, P, a0, wr0, nr, OC, b, relu, yrow, nt);
    }
    if (nt) stream_fence();
  });
}

// ---- channels first: channels-last tiles ----
// Per image and block of CB channels (the sliding kernel's NB vectors): the block's input
// planes transposed into a channels-last tile (H W x CB, L1/L2-sized at MobileNet's shapes),
// the block's weights into [k][CB], the sliding kernel over the tile, its output tile
// transposed into y's planes. Rows narrower than a vector went through channels-last copies of
// the whole x and y before (conv.cpp, nchw_via_cl), wider ones through the channels-first
// kernel: N32 C240 14x14 k5, 2 threads, kernel alone, alternating in one process, 1.04-1.09 ms
// through the copies against 0.68-0.72 ms on tiles (channels last: 0.49-0.53 ms).
// bad: set when a block's input planes are not finite (each scanned before its transpose).
// Which shapes: those the sliding kernels take (kernel widths 3/5/7, stride 1/2; k3 only on
// rows of at most 14 or channels within a vector), one output channel per input channel, maps
// of at most 4096 pixels (a tile of 512 KB). Kernel alone, 2 threads, ms, tiles against the
// channels-first kernel (wider rows) or the copies (narrower), AVX-512 / AVX2 build:
// N8 C120 28x28 k5 0.35 / 0.56 and 0.47 / 1.12; N8 C72 56x56 k5 s1 1.01 / 1.96 and 0.98 / 2.31,
// s2 0.37 / 1.04 and 0.37 / 0.99; N32 C96 14x14 k3 (AVX2) 0.25 / 0.41; N8 C576 14x14 k5 s2 (AVX2)
// 0.21 / 0.29. k3 on wider rows keeps the channels-first kernel (the sliding rows lose there
// in channels last too, see slide_ok).
bool nchw_tiles_ok(const ConvShape& s) {
  ConvShape t = s;
  t.cl = true;
  return !s.cl && s.OC == s.C && s.H * s.W <= 4096 && s.OH * s.OW <= 4096 && slide_ok(t);
}

thread_local std::vector<float> t_tile;

// The tiles' frame: per image and block of CB channels (the last block may be narrower), the
// block's input planes transposed into a channels-last tile xs (H W, cw); compute(c0, cw, xs,
// ys) writes the block's output tile ys (OH OW, cw) for output channels c0 .. c0 + cw; ys goes
// back to y's planes through a second tile and one sequential copy (the transpose's stores
// straight into y, 32 bytes into each of the block's planes in turn, ran 0.84 ms against 0.68,
// depthwise k5 N32 C240 14x14). bad: set when a block's input planes are not finite (each
// scanned before its transpose). Needs OC == C (a block's outputs read only its own inputs).
template <class F>
void nchw_tiles(const ConvShape& s, int64_t CB, const float* x, float* y, std::atomic<bool>* bad, F&& compute) {
  const int64_t C = s.C, HW = s.H * s.W, OHW = s.OH * s.OW, nb = (C + CB - 1) / CB;
  parallel_for(s.N * nb, 1, [&](int64_t tb, int64_t te) {
    const size_t need = static_cast<size_t>((HW + 2 * OHW) * CB);
    if (t_tile.size() < need) t_tile.resize(need);
    float* xs = t_tile.data();  // (H W, cw): the block's input, channels last
    float* ys = xs + HW * CB;   // (OH OW, cw): its output
    float* yt = ys + OHW * CB;  // (cw, OH OW): the output in y's layout
    for (int64_t t = tb; t < te; ++t) {
      const int64_t n = t / nb, c0 = (t % nb) * CB, cw = std::min(CB, C - c0);
      const float* xp = x + (n * C + c0) * HW;
      if (bad && !finite_kernels().f32(xp, cw * HW)) bad->store(true, std::memory_order_relaxed);
      transpose(xp, HW, cw, HW, xs, cw);
      compute(c0, cw, xs, ys);
      transpose(ys, cw, OHW, cw, yt, OHW);
      std::memcpy(y + (n * C + c0) * OHW, yt, sizeof(float) * cw * OHW);
    }
  });
}

// The depthwise forward on tiles of kSlideNB vectors of channels, each by the sliding rows.
void fwd_nchw_tiles(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y,
                    std::atomic<bool>* bad) {
  constexpr int64_t CB = kSlideNB * VL;
  const int64_t KHW = s.KH * s.KW, P = slide_p(s.OW);
  const std::array<SlideFn, 6>& fs = *(P == 8 ? slide_sets<8>(s.KW, s.sw) : slide_sets<7>(s.KW, s.sw));
  // every block's weights once, tap-major: block c0 / CB at c0 * KHW, [k][cw]
  std::vector<float> wt(static_cast<size_t>(s.C * KHW));
  for (int64_t c0 = 0; c0 < s.C; c0 += CB) {
    const int64_t cw = std::min(CB, s.C - c0);
    for (int64_t j = 0; j < cw; ++j)
      for (int64_t k = 0; k < KHW; ++k) wt[c0 * KHW + k * cw + j] = w[(c0 + j) * KHW + k];
  }
  nchw_tiles(s, CB, x, y, bad, [&](int64_t c0, int64_t cw, const float* xs, float* ys) {
    ConvShape t = s;  // the tile: cw channels last
    t.OC = cw;
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const float* a0[64];
      const float* wr0[64];
      const int64_t nr = kernel_rows(t, oh, xs, wt.data() + c0 * KHW, 0, a0, wr0);
      slide_row(s, fs, P, a0, wr0, nr, cw, b ? b + c0 : nullptr, relu, ys + oh * s.OW * cw, false);
    }
  });
}

// y (N, OH, OW, OC) from xe (N, H, W, OC): the input with its channels already expanded;
// bad: see scan_rows (xe is finite exactly when x is).
void fwd_nhwc(const ConvShape& s, const float* xe, const float* wk, const float* b, bool relu, float* y,
              std::atomic<bool>* bad = nullptr) {
  std::atomic<bool> unused{false};
  if (!bad) bad = &unused;
  if (slide_ok(s)) {
    fwd_nhwc_slide(s, xe, wk, b, relu, y, bad);
    return;
  }
  const int64_t OC = s.OC, KHW = s.KH * s.KW;
  const int64_t grain = row_grain(s);
  int64_t owa, owb;
  inner_range(s.OW, s.W, s.KW, s.sw, s.pl, s.dw, owa, owb);
  const bool fast = owb > owa && s.KH <= 64;
  const bool nts = stream_ok(s, y);
  parallel_for(s.N * s.OH, grain, [&](int64_t rb, int64_t re) {
    if ((int64_t)t_off.size() < 2 * KHW) t_off.resize(2 * KHW);
    int64_t* off = t_off.data();
    int64_t* wo = off + KHW;
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n = r / s.OH, oh = r % s.OH;
      const float* xn = xe + n * s.H * s.W * OC;
      float* yrow = y + r * s.OW * OC;
      scan_rows(s, xn, oh, bad);
      if (fast) {
        const float* a0[64];
        const float* wr[64];
        const int64_t nr = kernel_rows(s, oh, xn, wk, owa * s.sw - s.pl, a0, wr);
        run_row(a0, wr, nr, s.KW, s.dw * OC, s.sw * OC, OC, owa, owb, b, relu, yrow, nts);
      }
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        if (fast && ow >= owa && ow < owb) continue;
        int64_t nt = 0;
        for (int64_t kh = 0; kh < s.KH; ++kh) {
          const int64_t ih = oh * s.sh - s.pt + kh * s.dh;
          if (ih < 0 || ih >= s.H) continue;
          for (int64_t kw = 0; kw < s.KW; ++kw) {
            const int64_t iw = ow * s.sw - s.pl + kw * s.dw;
            if (iw < 0 || iw >= s.W) continue;
            off[nt] = (ih * s.W + iw) * OC;
            wo[nt++] = (kh * s.KW + kw) * OC;
          }
        }
        taps_pixel(xn, wk, off, wo, nt, b, relu, y + (r * s.OW + ow) * OC, OC);
      }
    }
    if (nts) stream_fence();
  });
}

// grad_x (N, H, W, C): per input pixel, the taps of the output pixels that read it; with
// m > 1 the OC-wide sum is folded over each channel's m outputs.
void gx_nhwc(const ConvShape& s, const float* gy, const float* wk, float* gx) {
  const int64_t OC = s.OC, C = s.C, m = OC / C, KHW = s.KH * s.KW;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, s.W * OC * KHW));
  // stride 1, m == 1: columns iw whose taps (ow = iw + pl - kw*dw, kw < KW) all lie in [0, OW)
  int64_t iwa = 0, iwb = 0;
  if (s.sh == 1 && s.sw == 1 && m == 1) {
    iwa = std::max<int64_t>(0, (s.KW - 1) * s.dw - s.pl);
    iwb = std::max<int64_t>(iwa, std::min(s.W, s.OW - s.pl));
  }
  const bool fast = iwb > iwa && s.KH <= 64;
  parallel_for(s.N * s.H, grain, [&](int64_t rb, int64_t re) {
    if ((int64_t)t_off.size() < 2 * KHW) t_off.resize(2 * KHW);
    int64_t* off = t_off.data();
    int64_t* wo = off + KHW;
    float* tmp = m > 1 ? scratch(t_dw, OC) : nullptr;
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n = r / s.H, ih = r % s.H;
      const float* gn = gy + n * s.OH * s.OW * OC;
      if (fast) {
        // tap (kh, kw) reads gy at (ih + pt - kh*dh, iw + pl - kw*dw): columns step back by dw
        const float* a0[64];
        const float* wr[64];
        int64_t nr = 0;
        for (int64_t kh = 0; kh < s.KH; ++kh) {
          const int64_t oh = ih + s.pt - kh * s.dh;
          if (oh < 0 || oh >= s.OH) continue;
          a0[nr] = gn + (oh * s.OW + iwa + s.pl) * OC;
          wr[nr++] = wk + kh * s.KW * OC;
        }
        run_row(a0, wr, nr, s.KW, -s.dw * OC, OC, OC, iwa, iwb, nullptr, false, gx + r * s.W * C);
      }
      for (int64_t iw = 0; iw < s.W; ++iw) {
        if (fast && iw >= iwa && iw < iwb) continue;
        int64_t nt = 0;
        for (int64_t kh = 0; kh < s.KH; ++kh) {
          const int64_t th = ih + s.pt - kh * s.dh;
          if (th < 0 || th % s.sh) continue;
          const int64_t oh = th / s.sh;
          if (oh >= s.OH) continue;
          for (int64_t kw = 0; kw < s.KW; ++kw) {
            const int64_t tw = iw + s.pl - kw * s.dw;
            if (tw < 0 || tw % s.sw) continue;
            const int64_t ow = tw / s.sw;
            if (ow >= s.OW) continue;
            off[nt] = (oh * s.OW + ow) * OC;
            wo[nt++] = (kh * s.KW + kw) * OC;
          }
        }
        float* out = gx + (r * s.W + iw) * C;
        if (m == 1) {
          taps_pixel(gn, wk, off, wo, nt, nullptr, false, out, OC);
        } else {
          taps_pixel(gn, wk, off, wo, nt, nullptr, false, tmp, OC);
          for (int64_t c = 0; c < C; ++c) {
            float a = 0.f;
            for (int64_t j = 0; j < m; ++j) a += tmp[c * m + j];
            out[c] = a;
          }
        }
      }
    }
  });
}

// The tap range [lo, hi) of each output position along one axis: the taps inside the input.
void tap_ranges(int64_t O, int64_t I, int64_t K, int64_t st, int64_t p, int64_t d, std::vector<int64_t>& lo,
                std::vector<int64_t>& hi) {
  lo.assign(O, 0);
  hi.assign(O, 0);
  for (int64_t o = 0; o < O; ++o) {
    int64_t a = K, b = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t i = o * st - p + k * d;
      if (i >= 0 && i < I) { a = std::min(a, k); b = k + 1; }
    }
    lo[o] = a < b ? a : 0;
    hi[o] = a < b ? b : 0;
  }
}

// Partial grad_w of one (output row, kernel row) pair over the output columns [owa, owb),
// where every tap of the kernel row lies inside the input: NB lane groups of channels from c,
// KWT taps held in registers across the row. gr: gy's row, xr: x's row ih (both at channel 0);
// pk: the partial sums [kw][o] of this kernel row.
template <class V, int NB, int KWT>
inline void gw_nhwc_run(const ConvShape& s, const float* gr, const float* xr, int64_t owa, int64_t owb, int64_t c,
                        float* pk) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  const int64_t OC = s.OC;
  V acc[KWT][NB];
  for (int k = 0; k < KWT; ++k)
    for (int i = 0; i < NB; ++i) acc[k][i] = ld<V>(pk + k * OC + c + i * L);
  for (int64_t ow = owa; ow < owb; ++ow) {
    V g[NB];
    for (int i = 0; i < NB; ++i) g[i] = ld<V>(gr + ow * OC + c + i * L);
    const float* xb = xr + (ow * s.sw - s.pl) * OC + c;
    for (int k = 0; k < KWT; ++k)
      for (int i = 0; i < NB; ++i) acc[k][i] += g[i] * ld<V>(xb + k * s.dw * OC + i * L);
  }
  for (int k = 0; k < KWT; ++k)
    for (int i = 0; i < NB; ++i) st(pk + k * OC + c + i * L, acc[k][i]);
}

// gw_nhwc_run for the last n < VL channels from c: one masked vector (see taps_tail).
template <int KWT>
inline void gw_nhwc_tail(const ConvShape& s, const float* gr, const float* xr, int64_t owa, int64_t owb, int64_t c,
                         float* pk, int n) {
  const int64_t OC = s.OC;
  vf acc[KWT];
  for (int k = 0; k < KWT; ++k) acc[k] = loadu_n(pk + k * OC + c, n);
  for (int64_t ow = owa; ow < owb; ++ow) {
    const vf g = loadu_n(gr + ow * OC + c, n);
    const float* xb = xr + (ow * s.sw - s.pl) * OC + c;
    for (int k = 0; k < KWT; ++k) acc[k] += g * loadu_n(xb + k * s.dw * OC, n);
  }
  for (int k = 0; k < KWT; ++k) storeu_n(pk + k * OC + c, acc[k], n);
}

// Registers: KWT * NB sums + NB gy vectors within 24 (AVX-512, 32 registers) or 12 (16).
template <int KWT>
constexpr int gw_nb() {
  constexpr int q = (VL == 16 ? 24 : 12) / (KWT + 1);
  return q > 4 ? 4 : (q < 1 ? 1 : q);
}

template <int KWT>
void gw_nhwc_row_t(const ConvShape& s, const float* gr, const float* xr, int64_t owa, int64_t owb, float* pk) {
  constexpr int NB = gw_nb<KWT>();
  int64_t c = 0;
  for (; c + NB * VL <= s.OC; c += NB * VL) gw_nhwc_run<vf, NB, KWT>(s, gr, xr, owa, owb, c, pk);
  for (; c + VL <= s.OC; c += VL) gw_nhwc_run<vf, 1, KWT>(s, gr, xr, owa, owb, c, pk);
  if (c < s.OC) gw_nhwc_tail<KWT>(s, gr, xr, owa, owb, c, pk, int(s.OC - c));
}

// The taps of output column ow that lie inside the input, one at a time (edges, and kernel
// widths without a register version).
void gw_nhwc_col(const ConvShape& s, const float* g, const float* xr, int64_t ow, int64_t kwlo, int64_t kwhi,
                 float* pk) {
  const int64_t OC = s.OC;
  for (int64_t kw = kwlo; kw < kwhi; ++kw) {
    const float* xp = xr + (ow * s.sw - s.pl + kw * s.dw) * OC;
    float* p = pk + kw * OC;
    int64_t c = 0;
    for (; c + VL <= OC; c += VL) storeu(p + c, loadu(p + c) + loadu(g + c) * loadu(xp + c));
    if (c < OC) {
      const int n = int(OC - c);
      storeu_n(p + c, loadu_n(p + c, n) + loadu_n(g + c, n) * loadu_n(xp + c, n), n);
    }
  }
}

// grad_w ([k][o], OC wide; null: not asked) and grad_b over every pixel: partial sums per
// chunk of output rows of one image (a fixed split), added up in chunk order.
void gw_nhwc(const ConvShape& s, const float* gy, const float* xe, float* gwk, float* gb) {
  const int64_t OC = s.OC, KHW = s.KH * s.KW;
  std::vector<int64_t> khlo, khhi, kwlo, kwhi;
  tap_ranges(s.OH, s.H, s.KH, s.sh, s.pt, s.dh, khlo, khhi);
  tap_ranges(s.OW, s.W, s.KW, s.sw, s.pl, s.dw, kwlo, kwhi);
  // columns whose taps all lie inside the input: [owa, owb)
  int64_t owa = 0, owb = 0;
  {
    int64_t a = s.OW, b = 0;
    for (int64_t ow = 0; ow < s.OW; ++ow)
      if (kwlo[ow] == 0 && kwhi[ow] == s.KW) { a = std::min(a, ow); b = ow + 1; }
    if (a < b) { owa = a; owb = b; }
  }
  const bool regs = s.KW == 1 || s.KW == 3 || s.KW == 5 || s.KW == 7;
  if (!regs) owa = owb = 0;
  // Chunks of RB output rows of the whole batch (n * OH + oh), ~2048 pixels each (N32 C96
  // 56x56: 49 chunks of 37 rows, 0.2 MB of partial sums), fewer and longer when the partial
  // sums would pass 4 M floats (wide, large-kernel layers on big batches).
  const int64_t psz = (gwk ? KHW * OC : 0) + OC, TR = s.N * s.OH;
  int64_t RB = std::max<int64_t>(1, 2048 / s.OW);
  RB = std::max(RB, (TR * psz + (int64_t(1) << 22) - 1) >> 22);
  RB = std::min(RB, TR);
  const int64_t nchunk = (TR + RB - 1) / RB;
  std::vector<float> part(nchunk * psz, 0.f);
  parallel_for(nchunk, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t ch = cb; ch < ce; ++ch) {
      float* pw = part.data() + ch * psz;
      float* pb = pw + (gwk ? KHW * OC : 0);
      for (int64_t row = ch * RB; row < std::min(TR, (ch + 1) * RB); ++row) {
        const int64_t n = row / s.OH, oh = row % s.OH;
        const float* xn = xe + n * s.H * s.W * OC;
        const float* gr = gy + row * s.OW * OC;
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const float* g = gr + ow * OC;
          int64_t c = 0;
          for (; c + VL <= OC; c += VL) storeu(pb + c, loadu(pb + c) + loadu(g + c));
          for (; c < OC; ++c) pb[c] += g[c];
        }
        if (!gwk) continue;
        for (int64_t kh = khlo[oh]; kh < khhi[oh]; ++kh) {
          const float* xr = xn + (oh * s.sh - s.pt + kh * s.dh) * s.W * OC;
          float* pk = pw + kh * s.KW * OC;
          switch (owb > owa ? s.KW : 0) {
            case 1: gw_nhwc_row_t<1>(s, gr, xr, owa, owb, pk); break;
            case 3: gw_nhwc_row_t<3>(s, gr, xr, owa, owb, pk); break;
            case 5: gw_nhwc_row_t<5>(s, gr, xr, owa, owb, pk); break;
            case 7: gw_nhwc_row_t<7>(s, gr, xr, owa, owb, pk); break;
            default: break;
          }
          for (int64_t ow = 0; ow < s.OW; ++ow)
            if (ow < owa || ow >= owb) gw_nhwc_col(s, gr + ow * OC, xr, ow, kwlo[ow], kwhi[ow], pk);
        }
      }
    }
  });
  // sum the chunks in order, element blocks in parallel
  parallel_for(psz, 256, [&](int64_t eb, int64_t ee) {
    for (int64_t e = eb; e < ee; ++e) {
      float a = 0.f;
      for (int64_t ch = 0; ch < nchunk; ++ch) a += part[ch * psz + e];
      if (gwk && e < KHW * OC) gwk[e] = a;
      else if (gb && e >= psz - OC) gb[e - (psz - OC)] = a;
    }
  });
}

// ---- channels first ----

// The padded, phase-split copy of one input plane: row r (padded row, ih = r - pt), phase q,
// column i holds padded column i * sw + q (iw = i * sw + q - pl); zero outside the input.
struct PhaseGeom {
  int64_t R, Q, Wq, ld;  // rows, phases (sw), columns per phase, row pitch (Q * ld per row)
};

PhaseGeom phase_geom(const ConvShape& s) {
  PhaseGeom g{};
  g.R = (s.OH - 1) * s.sh + (s.KH - 1) * s.dh + 1;
  g.Q = s.sw;
  const int64_t Wp = (s.OW - 1) * s.sw + (s.KW - 1) * s.dw + 1;
  g.Wq = (Wp + s.sw - 1) / s.sw;
  g.ld = g.Wq + 4 * VL;  // slack: a vector block starting at the last column stays inside
  return g;
}

inline float* phase_row(float* buf, const PhaseGeom& g, int64_t r, int64_t q) { return buf + (r * g.Q + q) * g.ld; }

// Every call with one geometry writes the same positions, so the caller zeroes buf once per
// task (the zeros elsewhere stay); zeroing it per plane cost as much as the copy.
void fill_phases(const ConvShape& s, const PhaseGeom& g, const float* plane, float* buf) {
  for (int64_t r = 0; r < g.R; ++r) {
    const int64_t ih = r - s.pt;
    if (ih < 0 || ih >= s.H) continue;
    const float* src = plane + ih * s.W;
    for (int64_t q = 0; q < g.Q; ++q) {
      // column i of phase q reads iw = i * sw + q - pl, for iw in [0, W) and i < Wq
      const int64_t d0 = q - s.pl;
      const int64_t i0 = d0 >= 0 ? 0 : (-d0 + s.sw - 1) / s.sw;
      const int64_t i1 = std::min(g.Wq, d0 >= s.W ? 0 : (s.W - 1 - d0) / s.sw + 1);
      float* dst = phase_row(buf, g, r, q);
      if (s.sw == 1) {
        if (i1 > i0) std::memcpy(dst + i0, src + i0 + d0, sizeof(float) * (i1 - i0));
      } else {
        int64_t i = i0;
        if (s.sw == 2) {
          // even lanes of two vectors (loads stay inside the row: 2 (i + VL) + d0 <= W)
          vi even;
          for (int l = 0; l < VL; ++l) even[l] = 2 * l;
          for (; 2 * (i + VL) + d0 <= s.W && i + VL <= i1; i += VL) {
            const float* sp = src + 2 * i + d0;
            storeu(dst + i, __builtin_shuffle(loadu(sp), loadu(sp + VL), even));
          }
        }
        for (; i < i1; ++i) dst[i] = src[i * s.sw + d0];
      }
    }
  }
}

// Where tap column kw starts within a padded row of the phase buffer: phase (kw * dw) % sw,
// column (kw * dw) / sw. Computed once per call: a division per tap in the inner loops had
// cost more than the taps' multiply-adds (C96 56x56 k3, N32: ~9.5 ms a forward).
using TapCols = std::vector<int64_t>;

TapCols tap_cols(const ConvShape& s, const PhaseGeom& g) {
  TapCols t(s.KW);
  for (int64_t kw = 0; kw < s.KW; ++kw) {
    const int64_t q = kw * s.dw;
    t[kw] = (q % s.sw) * g.ld + q / s.sw;
  }
  return t;
}

// y row oh of one plane: y[ow] = b + sum_k w[k] * phases(oh, k)[ow].
template <int NB>
inline void fwd_nchw_cols(const ConvShape& s, const PhaseGeom& g, const int64_t* tc, const float* buf,
                          const float* wp, int64_t oh, int64_t ow, float bias, vf* acc) {
  for (int i = 0; i < NB; ++i) acc[i] = splat(bias);
  for (int64_t kh = 0; kh < s.KH; ++kh) {
    const float* row = buf + (oh * s.sh + kh * s.dh) * g.Q * g.ld + ow;
    for (int64_t kw = 0; kw < s.KW; ++kw) {
      const float* a = row + tc[kw];
      const vf wv = splat(wp[kh * s.KW + kw]);
      for (int i = 0; i < NB; ++i) acc[i] += wv * loadu(a + i * VL);
    }
  }
}

// One column vector at ow of NR consecutive output rows from oh (independent sums: a narrow
// plane, k5 14x14, otherwise waits on one FMA chain of KH*KW taps).
template <int NR>
inline void fwd_nchw_rows(const ConvShape& s, const PhaseGeom& g, const int64_t* tc, const float* buf,
                          const float* wp, int64_t oh, int64_t ow, float bias, vf* acc) {
  for (int j = 0; j < NR; ++j) acc[j] = splat(bias);
  const int64_t rs = s.sh * g.Q * g.ld;  // one output row further
  for (int64_t kh = 0; kh < s.KH; ++kh) {
    const float* row = buf + (oh * s.sh + kh * s.dh) * g.Q * g.ld + ow;
    for (int64_t kw = 0; kw < s.KW; ++kw) {
      const float* a = row + tc[kw];
      const vf wv = splat(wp[kh * s.KW + kw]);
      for (int j = 0; j < NR; ++j) acc[j] += wv * loadu(a + j * rs);
    }
  }
}

// One output plane yp (OH x OW) of a plane held in phase buffer buf, kernel wp (KH x KW).
void plane_conv(const ConvShape& s, const PhaseGeom& g, const int64_t* tc, const float* buf, const float* wp,
                float bias, bool relu,
                float* yp) {
  vf acc[4];
  const int64_t owt = s.OW / (4 * VL) * (4 * VL);
  for (int64_t oh = 0; oh < s.OH; ++oh) {
    float* yr = yp + oh * s.OW;
    for (int64_t ow = 0; ow < owt; ow += 4 * VL) {
      fwd_nchw_cols<4>(s, g, tc, buf, wp, oh, ow, bias, acc);
      for (int i = 0; i < 4; ++i) storeu(yr + ow + i * VL, relu ? relu_of(acc[i]) : acc[i]);
    }
  }
  for (int64_t ow = owt; ow < s.OW; ow += VL) {
    const int64_t nl = std::min<int64_t>(VL, s.OW - ow);
    for (int64_t oh = 0; oh < s.OH;) {
      const int nr = s.OH - oh >= 4 ? 4 : 1;
      if (nr == 4) fwd_nchw_rows<4>(s, g, tc, buf, wp, oh, ow, bias, acc);
      else fwd_nchw_rows<1>(s, g, tc, buf, wp, oh, ow, bias, acc);
      for (int j = 0; j < nr; ++j) {
        const vf v = relu ? relu_of(acc[j]) : acc[j];
        float* yr = yp + (oh + j) * s.OW + ow;
        if (nl == VL) storeu(yr, v);
        else storeu_n(yr, v, int(nl));
      }
      oh += nr;
    }
  }
}

// bad, when given: set if an input plane is not finite, each scanned right after its copy
// into the phase buffer (in cache then).
void fwd_nchw(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y,
              std::atomic<bool>* bad = nullptr) {
  const PhaseGeom g = phase_geom(s);
  const TapCols tc = tap_cols(s, g);
  const int64_t m = s.OC / s.C, KHW = s.KH * s.KW, plane = s.OH * s.OW;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, plane * KHW));
  parallel_for(s.N * s.OC, grain, [&](int64_t pb, int64_t pe) {
    float* buf = scratch(t_dw, g.R * g.Q * g.ld);
    std::memset(buf, 0, sizeof(float) * g.R * g.Q * g.ld);
    int64_t last = -1;
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t n = p / s.OC, o = p % s.OC, xc = n * s.C + o / m;
      if (xc != last) {
        fill_phases(s, g, x + xc * s.H * s.W, buf);
        if (bad && !finite_kernels().f32(x + xc * s.H * s.W, s.H * s.W)) bad->store(true, std::memory_order_relaxed);
      }
      last = xc;
      plane_conv(s, g, tc.data(), buf, w + o * KHW, b ? b[o] : 0.f, relu, y + p * plane);
    }
  });
}

// grad_x plane (n, c) as a stride-1 conv with the flipped kernel over U, gy of the c's m
// output channels spread out by the stride (zeros between) and shifted by (K-1)*d - p:
// gx[ih][iw] = sum_k wflip[k] * U[ih + kh*dh][iw + kw*dw]. A scatter of gy into a padded
// buffer was 2-3x slower here: its overlapping vector read-modify-writes defeat store
// forwarding (k5 14x14: ~5.6 -> ~1.5 ms).
void gx_nchw(const ConvShape& s, const float* gy, const float* w, float* gx) {
  ConvShape t = s;
  t.sh = t.sw = 1;
  t.OH = s.H;
  t.OW = s.W;
  const PhaseGeom g = phase_geom(t);
  const TapCols tc = tap_cols(t, g);
  const int64_t m = s.OC / s.C, KHW = s.KH * s.KW, plane = s.H * s.W;
  const int64_t PT = (s.KH - 1) * s.dh - s.pt, PL = (s.KW - 1) * s.dw - s.pl;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, m * plane * KHW));
  parallel_for(s.N * s.C, grain, [&](int64_t pb, int64_t pe) {
    float* buf = scratch(t_dw, g.R * g.ld);
    std::memset(buf, 0, sizeof(float) * g.R * g.ld);  // U's positions are the same for every plane
    float* tmp = m > 1 ? scratch(t_dw2, plane) : nullptr;
    float wf[64];
    std::vector<float> wfv;
    float* wfp = KHW <= 64 ? wf : (wfv.resize(KHW), wfv.data());
    for (int64_t p = pb; p < pe; ++p) {
      const int64_t n = p / s.C, c = p % s.C;
      float* out = gx + p * plane;
      for (int64_t j = 0; j < m; ++j) {
        const int64_t o = c * m + j;
        const float* gp = gy + (n * s.OC + o) * s.OH * s.OW;
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          const int64_t r = oh * s.sh + PT;
          if (r < 0 || r >= g.R) continue;
          float* row = buf + r * g.ld;
          const float* src = gp + oh * s.OW;
          // columns i = ow * sw + PL inside [0, Wq)
          const int64_t o0 = PL >= 0 ? 0 : (-PL + s.sw - 1) / s.sw;
          const int64_t o1 = std::min(s.OW, PL >= g.Wq ? 0 : (g.Wq - 1 - PL) / s.sw + 1);
          if (s.sw == 1) {
            if (o1 > o0) std::memcpy(row + o0 + PL, src + o0, sizeof(float) * (o1 - o0));
          } else {
            for (int64_t ow = o0; ow < o1; ++ow) row[ow * s.sw + PL] = src[ow];
          }
        }
        for (int64_t k = 0; k < KHW; ++k) wfp[k] = w[o * KHW + KHW - 1 - k];
        plane_conv(t, g, tc.data(), buf, wfp, 0.f, false, j == 0 ? out : tmp);
        if (j > 0)
          for (int64_t i = 0; i < plane; ++i) out[i] += tmp[i];
      }
    }
  });
}

// grad_w and grad_b of output channel o: over images in order, rows, column vectors.
void gw_nchw(const ConvShape& s, const float* gy, const float* x, float* gw, float* gb) {
  const PhaseGeom g = phase_geom(s);
  const TapCols tc = tap_cols(s, g);
  const int64_t m = s.OC / s.C, KHW = s.KH * s.KW, plane = s.OH * s.OW;
  parallel_for(s.OC, 1, [&](int64_t ob, int64_t oe) {
    float* buf = scratch(t_dw, g.R * g.Q * g.ld);
    std::memset(buf, 0, sizeof(float) * g.R * g.Q * g.ld);
    float* gt = scratch(t_dw2, s.OW + VL);
    std::vector<vf> acc(KHW);
    for (int64_t o = ob; o < oe; ++o) {
      std::fill(acc.begin(), acc.end(), vf{});
      vf accb = vf{};
      for (int64_t n = 0; n < s.N; ++n) {
        const float* gp = gy + (n * s.OC + o) * plane;
        if (gw) fill_phases(s, g, x + (n * s.C + o / m) * s.H * s.W, buf);
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          std::memcpy(gt, gp + oh * s.OW, sizeof(float) * s.OW);
          std::memset(gt + s.OW, 0, sizeof(float) * VL);
          for (int64_t ow = 0; ow < s.OW; ow += VL) {
            const vf gv = loadu(gt + ow);
            accb += gv;
            if (!gw) continue;
            for (int64_t kh = 0; kh < s.KH; ++kh) {
              const float* row = buf + (oh * s.sh + kh * s.dh) * g.Q * g.ld + ow;
              for (int64_t kw = 0; kw < s.KW; ++kw) acc[kh * s.KW + kw] += gv * loadu(row + tc[kw]);
            }
          }
        }
      }
      if (gw)
        for (int64_t k = 0; k < KHW; ++k) gw[o * KHW + k] = hsum(acc[k]);
      if (gb) gb[o] = hsum(accb);
    }
  });
}

// ---- grouped, channels last, Cg == OCg small ----
// Output lane l of a vector at channel cb (a multiple of VL) is in group (cb + l) / Cg, whose
// input channel c sits at cb + (l / Cg) * Cg + c: one shuffle of the x vector at cb per c.
template <int CG, int NB>
inline void grouped_block(const float* in, const float* wg, const int64_t* off, const int64_t* wo, int64_t nt,
                          int64_t OC, const float* init, bool relu, float* out) {
  vi idx[CG];
  for (int c = 0; c < CG; ++c)
    for (int l = 0; l < VL; ++l) idx[c][l] = (l / CG) * CG + c;
  vf acc[NB];
  for (int i = 0; i < NB; ++i) acc[i] = init ? loadu(init + i * VL) : vf{};
  for (int64_t t = 0; t < nt; ++t) {
    const float* a = in + off[t];
    const float* w = wg + wo[t];
    for (int i = 0; i < NB; ++i) {
      const vf xv = loadu(a + i * VL);
      for (int c = 0; c < CG; ++c) acc[i] += __builtin_shuffle(xv, idx[c]) * loadu(w + c * OC + i * VL);
    }
  }
  for (int i = 0; i < NB; ++i) storeu(out + i * VL, relu ? relu_of(acc[i]) : acc[i]);
}

template <int CG>
void grouped_fwd_t(const ConvShape& s, const float* x, const float* wg, const float* b, bool relu, float* y) {
  const int64_t OC = s.OC, KHW = s.KH * s.KW;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, s.OW * OC * KHW * CG));
  parallel_for(s.N * s.OH, grain, [&](int64_t rb, int64_t re) {
    if ((int64_t)t_off.size() < 2 * KHW) t_off.resize(2 * KHW);
    int64_t* off = t_off.data();
    int64_t* wo = off + KHW;
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n = r / s.OH, oh = r % s.OH;
      const float* xn = x + n * s.H * s.W * OC;
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        int64_t nt = 0;
        for (int64_t kh = 0; kh < s.KH; ++kh) {
          const int64_t ih = oh * s.sh - s.pt + kh * s.dh;
          if (ih < 0 || ih >= s.H) continue;
          for (int64_t kw = 0; kw < s.KW; ++kw) {
            const int64_t iw = ow * s.sw - s.pl + kw * s.dw;
            if (iw < 0 || iw >= s.W) continue;
            off[nt] = (ih * s.W + iw) * OC;
            wo[nt++] = (kh * s.KW + kw) * CG * OC;
          }
        }
        float* yp = y + (r * s.OW + ow) * OC;
        int64_t c = 0;
        for (; c + 4 * VL <= OC; c += 4 * VL)
          grouped_block<CG, 4>(xn + c, wg + c, off, wo, nt, OC, b ? b + c : nullptr, relu, yp + c);
        for (; c < OC; c += VL)
          grouped_block<CG, 1>(xn + c, wg + c, off, wo, nt, OC, b ? b + c : nullptr, relu, yp + c);
      }
    }
  });
}

// grad_x of the small-group conv: per input pixel, the taps of the output pixels that read it;
// wt[(k*CG + j)*C + ci] = w[g*CG + j][ci % CG][k] (C == OC here).
template <int CG>
void grouped_gx_t(const ConvShape& s, const float* gy, const float* wt, float* gx) {
  const int64_t C = s.C, KHW = s.KH * s.KW;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, s.W * C * KHW * CG));
  parallel_for(s.N * s.H, grain, [&](int64_t rb, int64_t re) {
    if ((int64_t)t_off.size() < 2 * KHW) t_off.resize(2 * KHW);
    int64_t* off = t_off.data();
    int64_t* wo = off + KHW;
    for (int64_t r = rb; r < re; ++r) {
      const int64_t n = r / s.H, ih = r % s.H;
      const float* gn = gy + n * s.OH * s.OW * C;
      for (int64_t iw = 0; iw < s.W; ++iw) {
        int64_t nt = 0;
        for (int64_t kh = 0; kh < s.KH; ++kh) {
          const int64_t th = ih + s.pt - kh * s.dh;
          if (th < 0 || th % s.sh) continue;
          const int64_t oh = th / s.sh;
          if (oh >= s.OH) continue;
          for (int64_t kw = 0; kw < s.KW; ++kw) {
            const int64_t tw = iw + s.pl - kw * s.dw;
            if (tw < 0 || tw % s.sw) continue;
            const int64_t ow = tw / s.sw;
            if (ow >= s.OW) continue;
            off[nt] = (oh * s.OW + ow) * C;
            wo[nt++] = (kh * s.KW + kw) * CG * C;
          }
        }
        float* out = gx + (r * s.W + iw) * C;
        int64_t c = 0;
        for (; c + 4 * VL <= C; c += 4 * VL) grouped_block<CG, 4>(gn + c, wt + c, off, wo, nt, C, nullptr, false, out + c);
        for (; c < C; c += VL) grouped_block<CG, 1>(gn + c, wt + c, off, wo, nt, C, nullptr, false, out + c);
      }
    }
  });
}

// grad_w ([k][c][o], null: not asked) and grad_b of the small-group conv: partial sums per
// chunk of output rows, added up in chunk order (as gw_nhwc).
template <int CG>
void grouped_gw_t(const ConvShape& s, const float* gy, const float* x, float* gwk, float* gb) {
  const int64_t OC = s.OC, KHW = s.KH * s.KW;
  const int64_t wsz = gwk ? KHW * CG * OC : 0, psz = wsz + OC, TR = s.N * s.OH;
  int64_t RB = std::max<int64_t>(1, 2048 / s.OW);
  RB = std::max(RB, (TR * psz + (int64_t(1) << 22) - 1) >> 22);
  RB = std::min(RB, TR);
  const int64_t nchunk = (TR + RB - 1) / RB;
  std::vector<float> part(nchunk * psz, 0.f);
  parallel_for(nchunk, 1, [&](int64_t cb, int64_t ce) {
    vi idx[CG];
    for (int c = 0; c < CG; ++c)
      for (int l = 0; l < VL; ++l) idx[c][l] = (l / CG) * CG + c;
    for (int64_t ch = cb; ch < ce; ++ch) {
      float* pw = part.data() + ch * psz;
      float* pb = pw + wsz;
      for (int64_t row = ch * RB; row < std::min(TR, (ch + 1) * RB); ++row) {
        const int64_t n = row / s.OH, oh = row % s.OH;
        const float* xn = x + n * s.H * s.W * OC;
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const float* g = gy + (row * s.OW + ow) * OC;
          for (int64_t c = 0; c < OC; c += VL) storeu(pb + c, loadu(pb + c) + loadu(g + c));
          if (!gwk) continue;
          for (int64_t kh = 0; kh < s.KH; ++kh) {
            const int64_t ih = oh * s.sh - s.pt + kh * s.dh;
            if (ih < 0 || ih >= s.H) continue;
            for (int64_t kw = 0; kw < s.KW; ++kw) {
              const int64_t iw = ow * s.sw - s.pl + kw * s.dw;
              if (iw < 0 || iw >= s.W) continue;
              const float* xp = xn + (ih * s.W + iw) * OC;
              float* pk = pw + (kh * s.KW + kw) * CG * OC;
              for (int64_t c = 0; c < OC; c += VL) {
                const vf gv = loadu(g + c), xv = loadu(xp + c);
                for (int j = 0; j < CG; ++j)
                  storeu(pk + j * OC + c, loadu(pk + j * OC + c) + gv * __builtin_shuffle(xv, idx[j]));
              }
            }
          }
        }
      }
    }
  });
  parallel_for(psz, 256, [&](int64_t eb, int64_t ee) {
    for (int64_t e = eb; e < ee; ++e) {
      float a = 0.f;
      for (int64_t ch = 0; ch < nchunk; ++ch) a += part[ch * psz + e];
      if (e < wsz) gwk[e] = a;
      else if (gb) gb[e - wsz] = a;
    }
  });
}

}  // namespace

bool grouped_small_ok(const ConvShape& s) {
  const int64_t Cg = s.C / s.G;
  return s.cl && s.G > 1 && Cg > 1 && Cg == s.OC / s.G && (Cg == 2 || Cg == 4 || Cg == 8) && VL % Cg == 0 &&
         s.C % VL == 0;
}

// Channels first, small groups (the shapes grouped_small_ok takes in channels last, one output
// per input channel), maps of at most 4096 pixels: per image, blocks of channels (whole
// vectors, whole groups) on channels-last tiles (nchw_tiles), each by grouped_fwd_t. im2col ran
// N32 C128 G32 28x28 k3 at 8.8 ms against torch's 3.9 (channels first, 2 threads).
bool grouped_nchw_tiles_ok(const ConvShape& s) {
  ConvShape t = s;
  t.cl = true;
  return !s.cl && s.OC == s.C && grouped_small_ok(t) && s.H * s.W <= 4096 && s.OH * s.OW <= 4096;
}

void conv2d_forward_grouped_nchw_tiles(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                                       float* y, bool* x_finite) {
  const int64_t Cg = s.C / s.G, KHW = s.KH * s.KW;
  // Blocks as wide as a 256 KB tile allows (whole vectors dividing C): the kernel builds each
  // output pixel's tap list once for all of a tile's channels, so narrow tiles pay it more
  // often (N32 C128 G32 28x28 k3, kernel alone: 4.9 ms at 32 channels, 3.4 at 64, 3.3 at 128;
  // channels last 2.3 ms).
  int64_t CB = VL;
  for (int64_t cb = s.C; cb > VL; cb -= VL)
    if (s.C % cb == 0 && std::max(s.H * s.W, s.OH * s.OW) * cb * 4 <= (256 << 10)) {
      CB = cb;
      break;
    }
  const int64_t nb = s.C / CB;
  std::vector<float> wg(nb * KHW * Cg * CB);  // per block [k][c][o], o over the block's outputs
  for (int64_t o = 0; o < s.OC; ++o)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t k = 0; k < KHW; ++k) wg[(((o / CB) * KHW + k) * Cg + c) * CB + o % CB] = w[(o * Cg + c) * KHW + k];
  ConvShape t = s;  // one block of one image, channels last
  t.cl = true;
  t.N = 1;
  t.C = t.OC = CB;
  t.G = CB / Cg;
  std::atomic<bool> bad{false};
  nchw_tiles(s, CB, x, y, x_finite ? &bad : nullptr, [&](int64_t c0, int64_t, const float* xs, float* ys) {
    const float* wb = wg.data() + (c0 / CB) * KHW * Cg * CB;
    const float* bb = b ? b + c0 : nullptr;
    switch (Cg) {
      case 2: grouped_fwd_t<2>(t, xs, wb, bb, relu, ys); break;
      case 4: grouped_fwd_t<4>(t, xs, wb, bb, relu, ys); break;
      default: grouped_fwd_t<8>(t, xs, wb, bb, relu, ys); break;
    }
  });
  if (x_finite) *x_finite = !bad.load();
}

void conv2d_forward_grouped_small(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                                  float* y) {
  const int64_t Cg = s.C / s.G, OC = s.OC, KHW = s.KH * s.KW;
  std::vector<float> wg(KHW * Cg * OC);  // [k][c][o] = w[o][c][k]
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t k = 0; k < KHW; ++k) wg[(k * Cg + c) * OC + o] = w[(o * Cg + c) * KHW + k];
  switch (Cg) {
    case 2: grouped_fwd_t<2>(s, x, wg.data(), b, relu, y); break;
    case 4: grouped_fwd_t<4>(s, x, wg.data(), b, relu, y); break;
    default: grouped_fwd_t<8>(s, x, wg.data(), b, relu, y); break;
  }
}

void conv2d_backward_grouped_small(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx,
                                   float* gw, float* gb) {
  const int64_t Cg = s.C / s.G, OC = s.OC, KHW = s.KH * s.KW;
  if (gx) {
    std::vector<float> wt(KHW * Cg * OC);  // [k][j][ci] = w[(ci / Cg) * Cg + j][ci % Cg][k]
    for (int64_t ci = 0; ci < s.C; ++ci)
      for (int64_t j = 0; j < Cg; ++j)
        for (int64_t k = 0; k < KHW; ++k)
          wt[(k * Cg + j) * s.C + ci] = w[(((ci / Cg) * Cg + j) * Cg + ci % Cg) * KHW + k];
    switch (Cg) {
      case 2: grouped_gx_t<2>(s, gy, wt.data(), gx); break;
      case 4: grouped_gx_t<4>(s, gy, wt.data(), gx); break;
      default: grouped_gx_t<8>(s, gy, wt.data(), gx); break;
    }
  }
  if (gw || gb) {
    std::vector<float> gwk(gw ? KHW * Cg * OC : 0);  // [k][c][o]
    float* gp = gw ? gwk.data() : nullptr;
    switch (Cg) {
      case 2: grouped_gw_t<2>(s, gy, x, gp, gb); break;
      case 4: grouped_gw_t<4>(s, gy, x, gp, gb); break;
      default: grouped_gw_t<8>(s, gy, x, gp, gb); break;
    }
    if (gw)
      for (int64_t o = 0; o < OC; ++o)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t k = 0; k < KHW; ++k) gw[(o * Cg + c) * KHW + k] = gwk[(k * Cg + c) * OC + o];
  }
}

bool depthwise_ok(const ConvShape& s) { return s.G == s.C && s.C > 1 && s.OC % s.C == 0; }

bool depthwise_nchw_tiles_ok(const ConvShape& s) { return depthwise_ok(s) && nchw_tiles_ok(s); }

void conv2d_forward_depthwise(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                              float* y, bool* x_finite) {
  const int64_t m = s.OC / s.C;
  if (!s.cl) {
    std::atomic<bool> bad{false};
    if (nchw_tiles_ok(s))
      fwd_nchw_tiles(s, x, w, b, relu, y, x_finite ? &bad : nullptr);
    else
      fwd_nchw(s, x, w, b, relu, y, x_finite ? &bad : nullptr);
    if (x_finite) *x_finite = !bad.load();
    return;
  }
  const std::vector<float> wk = taps_major(s, w);
  std::atomic<bool> bad{false};
  if (m == 1) {
    fwd_nhwc(s, x, wk.data(), b, relu, y, &bad);
  } else {
    const std::vector<float> xe = expand_channels(s, x, m);
    fwd_nhwc(s, xe.data(), wk.data(), b, relu, y, &bad);
  }
  if (x_finite) *x_finite = !bad.load();
}

void conv2d_backward_depthwise(const ConvShape& s, const float* gy, const float* x, const float* w, float* gx,
                               float* gw, float* gb) {
  if (!s.cl) {
    if (gx) gx_nchw(s, gy, w, gx);
    if (gw || gb) gw_nchw(s, gy, x, gw, gb);
    return;
  }
  const int64_t m = s.OC / s.C;
  if (gx) {
    const std::vector<float> wk = taps_major(s, w);
    gx_nhwc(s, gy, wk.data(), gx);
  }
  if (gw || gb) {
    std::vector<float> xe;
    if (m > 1 && gw) xe = expand_channels(s, x, m);
    std::vector<float> gwk(gw ? s.KH * s.KW * s.OC : 0);
    gw_nhwc(s, gy, m > 1 && gw ? xe.data() : x, gw ? gwk.data() : nullptr, gb);
    if (gw) {
      const int64_t KHW = s.KH * s.KW;
      for (int64_t o = 0; o < s.OC; ++o)
        for (int64_t k = 0; k < KHW; ++k) gw[o * KHW + k] = gwk[k * s.OC + o];
    }
  }
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
