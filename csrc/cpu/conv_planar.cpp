// conv_planar.cpp: the forward of channels-first convs with few input channels (C <= 4, no
// groups, stride 1 or 2, dilation 1, kernels up to 7x7): an image network's first layer (RGB
// in). Output pixels along a row sit in vector lanes, a block of output channels in
// registers; each input row the output row needs is staged once with its zero padding and, at
// stride 2, split into its even and odd columns, so every tap is a contiguous vector load and
// each weight a broadcast. Before, these went through channels last (x and y transposed,
// conv.cpp's nchw_via_cl), the copies costing nearly as much as the convolution. Forward
// through pyaiml.ops, 2 threads, old and new builds alternating (medians of 40, three runs
// each, Zen 4 AVX-512): the mission CNN's conv1 (N32, 3 -> 32, 32x32) 0.54 -> 0.39 ms,
// MobileNetV3's stem (N8, 3 -> 16, 224x224, k3 s2) 1.05 -> 0.72 ms, ResNet-18's (N8, 3 -> 64,
// k7 s2) 12.8-12.9 -> 12.0 ms, conv1 at N1 22 -> 17 us.
// Summation per output: bias (or 0), then c, kh, kw in order, one FMA each (the naive kernel's
// order, in float32).
// Tests: tests/test_conv_algorithms.py (against the naive kernel, every ISA).
#include <algorithm>
#include <cstring>
#include <vector>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/conv_common.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

bool planar_ok(const ConvShape& s) {
  return !s.cl && s.G == 1 && s.C <= 4 && s.dh == 1 && s.dw == 1 && (s.sh == 1 || s.sh == 2) &&
         (s.sw == 1 || s.sw == 2) && s.KH <= 7 && s.KW <= 7 && s.OW >= VL && s.OC >= 4;
}

namespace {

// Output channels per register block and vectors of output pixels per channel: OB x 2 sums,
// two input vectors and a broadcast in the vector registers (AVX-512 32, AVX2 and SSE 16).
#if defined(__AVX512F__)
constexpr int OB = 12;
#else
constexpr int OB = 6;
#endif
constexpr int PX = 2;  // vectors of output pixels per step
constexpr int64_t BAND = 8;  // output rows per task: their input rows are staged once

// One output row's block of OB (or fewer: NO) channels over columns [ow0, ow0 + PX * VL), from
// the staged rows: rows[c * KH + kh] is input row (c, ih) split into sw phases of `plen`
// floats each (phase p holds padded columns p, p + sw, ...), or null where ih is outside x.
// koff[kw]: where tap kw's vector starts in a staged row, (kw % sw) * plen + kw / sw (computed
// once per call: a division per tap cost more than the tap's multiply-adds). The results go
// straight to y (row yo, channel stride ys; nw columns, the last step's may be short): sums
// handed back to the caller through an array were copied through memory on every call.
template <int NO>
inline void block(const ConvShape& s, const float* const* rows, const int64_t* koff, const float* w, const float* b,
                  int64_t o0, int64_t ow0, bool relu, float* yo, int64_t ys, int64_t nw) {
  vf a[NO][PX];
  for (int o = 0; o < NO; ++o) {
    const vf init = b ? splat(b[o0 + o]) : vf{};
    for (int p = 0; p < PX; ++p) a[o][p] = init;
  }
  const int64_t taps = s.KH * s.KW, wstride = s.C * taps;
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t kh = 0; kh < s.KH; ++kh) {
      const float* r = rows[c * s.KH + kh];
      if (!r) continue;
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        // padded column ow * sw + kw: phase kw % sw, index ow + kw / sw
        const float* xp = r + koff[kw] + ow0;
        vf xv[PX];
        for (int p = 0; p < PX; ++p) xv[p] = loadu(xp + p * VL);
        const float* wk = w + (o0 * s.C + c) * taps + kh * s.KW + kw;
        for (int o = 0; o < NO; ++o) {
          const float wv = wk[o * wstride];
          for (int p = 0; p < PX; ++p) a[o][p] += xv[p] * wv;
        }
      }
    }
  for (int o = 0; o < NO; ++o) {
    float* y = yo + o * ys;
    for (int p = 0; p < PX; ++p) {
      const vf v = relu ? vmax(a[o][p], vf{}) : a[o][p];
      const int64_t left = nw - p * VL;
      if (left >= VL)
        storeu(y + p * VL, v);
      else if (left > 0)
        storeu_n(y + p * VL, v, static_cast<int>(left));
    }
  }
}

// The block of no output channels from o0, at any count up to OB (one instance per count).
inline void block_any(int no, const ConvShape& s, const float* const* rows, const int64_t* koff, const float* w,
                      const float* b, int64_t o0, int64_t ow0, bool relu, float* yo, int64_t ys, int64_t nw) {
  switch (no) {
#if defined(__AVX512F__)
    case 12: return block<12>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    case 11: return block<11>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    case 10: return block<10>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    case 9: return block<9>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    case 8: return block<8>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    case 7: return block<7>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
#endif
    case 6: return block<6>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    case 5: return block<5>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    case 4: return block<4>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    case 3: return block<3>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    case 2: return block<2>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
    default: return block<1>(s, rows, koff, w, b, o0, ow0, relu, yo, ys, nw);
  }
}

// dst[j] = src[2 j], odd[j] = src[2 j + 1] for j < n (src holds 2 n + VL floats).
inline void split_even_odd(const float* src, int64_t n, float* even, float* odd) {
  int64_t j = 0;
#if defined(__AVX512F__)
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (; j + 16 <= n; j += 16) {
    const __m512 a = _mm512_loadu_ps(src + 2 * j), b = _mm512_loadu_ps(src + 2 * j + 16);
    _mm512_storeu_ps(even + j, _mm512_permutex2var_ps(a, ie, b));
    _mm512_storeu_ps(odd + j, _mm512_permutex2var_ps(a, io, b));
  }
#elif defined(__AVX2__)
  for (; j + 8 <= n; j += 8) {
    const __m256 a = _mm256_loadu_ps(src + 2 * j), b = _mm256_loadu_ps(src + 2 * j + 8);
    const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)), o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    _mm256_storeu_ps(even + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
    _mm256_storeu_ps(odd + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
  }
#endif
  for (; j < n; ++j) {
    even[j] = src[2 * j];
    odd[j] = src[2 * j + 1];
  }
}

}  // namespace

void conv2d_forward_planar(const ConvShape& s, const float* x, const float* w, const float* b, bool relu, float* y) {
  const int64_t owp = (s.OW + PX * VL - 1) / (PX * VL) * (PX * VL);
  // each phase: the output row's columns (rounded up to whole steps) plus the taps' reach
  const int64_t plen = owp + (s.KW + s.sw - 1) / s.sw + 1;
  const int64_t Wp = s.sw * plen + VL;  // the padded row (stride 2: before its split)
  const int64_t lo = std::max<int64_t>(0, s.pl), src0 = std::max<int64_t>(0, -s.pl);
  const int64_t n_in = std::max<int64_t>(0, std::min<int64_t>(s.W - src0, s.sw * plen - lo));
  int64_t koff[7];
  for (int64_t kw = 0; kw < s.KW; ++kw) koff[kw] = (kw % s.sw) * plen + kw / s.sw;
  // output channels in equal blocks of at most OB (16 -> 8 + 8, not 12 + 4)
  const int64_t nblk = (s.OC + OB - 1) / OB, per = (s.OC + nblk - 1) / nblk;
  // a band's input rows: (BAND - 1) * sh + KH per channel
  const int64_t span = (BAND - 1) * s.sh + s.KH, bands = (s.OH + BAND - 1) / BAND;
  const int64_t rlen = s.sw * plen;
  parallel_for(s.N * bands, 1, [&](int64_t t0, int64_t t1) {
    // zeroed once: every row staged writes the same columns, so the padding stays zero
    std::vector<float> stage(static_cast<size_t>(s.C * span * rlen + Wp), 0.f);
    float* padded = stage.data() + s.C * span * rlen;
    std::vector<const float*> rows(static_cast<size_t>(s.C * s.KH));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / bands, oh0 = (t % bands) * BAND, oh1 = std::min<int64_t>(oh0 + BAND, s.OH);
      const int64_t ih0 = oh0 * s.sh - s.pt, ih1 = std::min<int64_t>((oh1 - 1) * s.sh - s.pt + s.KH, s.H);
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t ih = std::max<int64_t>(ih0, 0); ih < ih1; ++ih) {
          const float* src = x + ((n * s.C + c) * s.H + ih) * s.W + src0;
          float* dst = stage.data() + (c * span + ih - ih0) * rlen;
          if (s.sw == 1) {
            std::memcpy(dst + lo, src, sizeof(float) * n_in);
          } else {  // the padded row, then its even and odd columns
            std::memcpy(padded + lo, src, sizeof(float) * n_in);
            split_even_odd(padded, plen, dst, dst + plen);
          }
        }
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        for (int64_t c = 0; c < s.C; ++c)
          for (int64_t kh = 0; kh < s.KH; ++kh) {
            const int64_t ih = oh * s.sh - s.pt + kh;
            rows[c * s.KH + kh] = ih < 0 || ih >= s.H ? nullptr : stage.data() + (c * span + ih - ih0) * rlen;
          }
        float* yrow = y + (n * s.OC) * s.OH * s.OW + oh * s.OW;
        for (int64_t o0 = 0; o0 < s.OC; o0 += per) {
          const int no = static_cast<int>(std::min<int64_t>(per, s.OC - o0));
          for (int64_t ow0 = 0; ow0 < s.OW; ow0 += PX * VL)
            block_any(no, s, rows.data(), koff, w, b, o0, ow0, relu, yrow + o0 * s.OH * s.OW + ow0, s.OH * s.OW,
                      std::min<int64_t>(PX * VL, s.OW - ow0));
        }
      }
    }
  });
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
