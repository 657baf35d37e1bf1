// pool.cpp: max_pool2d forward and backward, channels first or last, compiled per ISA.
// Channels last works on whole rows of C floats per window tap (the loops vectorise over
// C); channels first works plane by plane. Padding is implicit -inf, so every window holds
// at least one real element (padding <= kernel / 2 is checked by the binding). Ties: the
// first maximum in row-major window order wins (NaN counts as a maximum), as in torch.
// Backward scatters into grad_x image by image (channels last) or plane by plane, so no
// two threads write the same element; it uses the forward's indices or recomputes them.
// Indices outside the plane are never written through; the kernel reports them and the
// binding raises ValueError.
//
// Not here: validation (bindings/conv.cpp), ceil_mode, dilation, float64.
// Tests: tests/test_pool.py.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/conv.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {
namespace {

inline bool better(float v, float m) { return v > m || v != v; }

inline void window(const PoolShape& s, int64_t oh, int64_t ow, int64_t& h0, int64_t& h1, int64_t& w0, int64_t& w1) {
  h0 = oh * s.sh - s.ph;
  w0 = ow * s.sw - s.pw;
  h1 = std::min(h0 + s.KH, s.H);
  w1 = std::min(w0 + s.KW, s.W);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
}

typedef long long vl __attribute__((vector_size(VL * 8)));

// d[c] = a[c] == pos ? g[c] : 0. Written as a plain loop: GCC vectorises it (int64 compare
// into a mask, masked float move); a 16 x int64 vector-extension version was scalarised.
inline void put_eq(float* __restrict d, const int64_t* __restrict a, const float* __restrict g, int64_t pos,
                   int64_t C) {
  for (int64_t c = 0; c < C; ++c) d[c] = a[c] == pos ? g[c] : 0.f;
}

// Whether every a[c] lies in [0, hw).
inline bool in_range(const int64_t* a, int64_t C, int64_t hw) {
  unsigned long long bad = 0;
  for (int64_t c = 0; c < C; ++c) bad |= (unsigned long long)a[c] >= (unsigned long long)hw;
  return !bad;
}

thread_local std::vector<float> t_m;
thread_local std::vector<int64_t> t_a;

// Channels last, one output position: m[c] = max, a[c] = flat index of the first max.
// Vectorised over c: the running index is kept in 32-bit lanes and widened on store.
inline void argmax_cl(const PoolShape& s, const float* xn, int64_t oh, int64_t ow, float* m, int64_t* a) {
  int64_t h0, h1, w0, w1;
  window(s, oh, ow, h0, h1, w0, w1);
  const int64_t C = s.C;
  int64_t c = 0;
  for (; c + VL <= C; c += VL) {
    vf mv = loadu(xn + (h0 * s.W + w0) * C + c);
    vi av = vi{} + (int)(h0 * s.W + w0);
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; ++w) {
        const vf v = loadu(xn + (h * s.W + w) * C + c);
        const vi t = (v > mv) | (v != v);
        mv = t ? v : mv;
        av = t ? (vi{} + (int)(h * s.W + w)) : av;
      }
    storeu(m + c, mv);
    const vl aw = __builtin_convertvector(av, vl);
    std::memcpy(a + c, &aw, sizeof(aw));
  }
  for (; c < C; ++c) {
    float mm = xn[(h0 * s.W + w0) * C + c];
    int64_t aa = h0 * s.W + w0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; ++w) {
        const float v = xn[(h * s.W + w) * C + c];
        if (better(v, mm)) {
          mm = v;
          aa = h * s.W + w;
        }
      }
    m[c] = mm;
    a[c] = aa;
  }
}

}  // namespace

void max_pool2d_forward(const PoolShape& s, const float* x, float* y, int64_t* idx) {
  if (s.cl) {
    const int64_t C = s.C;
    parallel_for(s.N * s.OH, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.OW * C)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / s.OH, oh = t % s.OH;
        const float* xn = x + n * s.H * s.W * C;
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          float* yo = y + ((n * s.OH + oh) * s.OW + ow) * C;
          if (idx) {
            argmax_cl(s, xn, oh, ow, yo, idx + ((n * s.OH + oh) * s.OW + ow) * C);
            continue;
          }
          int64_t h0, h1, w0, w1;
          window(s, oh, ow, h0, h1, w0, w1);
          std::memcpy(yo, xn + (h0 * s.W + w0) * C, sizeof(float) * C);
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = (h == h0 ? w0 + 1 : w0); w < w1; ++w) {
              const float* v = xn + (h * s.W + w) * C;
              for (int64_t c = 0; c < C; ++c) yo[c] = better(v[c], yo[c]) ? v[c] : yo[c];
            }
        }
      }
    });
    return;
  }
  parallel_for(s.N * s.C, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.H * s.W)), [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const float* xp = x + pl * s.H * s.W;
      float* yp = y + pl * s.OH * s.OW;
      int64_t* ip = idx ? idx + pl * s.OH * s.OW : nullptr;
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          int64_t h0, h1, w0, w1;
          window(s, oh, ow, h0, h1, w0, w1);
          float m = xp[h0 * s.W + w0];
          int64_t a = h0 * s.W + w0;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) {
              const float v = xp[h * s.W + w];
              if (better(v, m)) {
                m = v;
                a = h * s.W + w;
              }
            }
          yp[oh * s.OW + ow] = m;
          if (ip) ip[oh * s.OW + ow] = a;
        }
    }
  });
}

bool max_pool2d_backward(const PoolShape& s, const float* gy, const float* x, const int64_t* idx, float* gx) {
  // Index range: checked per image/plane below; a bad index is skipped, never written through.
  std::vector<char> ok(s.cl ? s.N : s.N * s.C, 1);
  const int64_t hw = s.H * s.W;
  // Windows that never overlap (stride >= kernel), and whether they cover the whole plane.
  const bool disjoint = s.sh >= s.KH && s.sw >= s.KW;
  const bool covered = disjoint && s.sh == s.KH && s.sw == s.KW && s.ph == 0 && s.pw == 0 && s.OH * s.KH == s.H &&
                       s.OW * s.KW == s.W;
  if (s.cl) {
    const int64_t C = s.C;
    parallel_for(s.N, 1, [&](int64_t b, int64_t e) {
      if ((int64_t)t_m.size() < C) t_m.resize(C);
      if ((int64_t)t_a.size() < C) t_a.resize(C);
      for (int64_t n = b; n < e; ++n) {
        float* gn = gx + n * s.H * s.W * C;
        const float* xn = x + n * s.H * s.W * C;
        if (idx) ok[n] = in_range(idx + n * s.OH * s.OW * C, s.OH * s.OW * C, hw);
        if (disjoint) {
          // Each input element lies in at most one window: write gx directly (no scatter);
          // zero first only what no window covers. 2x2/s2 on (32,30,30,32): 0.82 -> 0.3 ms.
          if (!covered) std::memset(gn, 0, sizeof(float) * s.H * s.W * C);
          for (int64_t oh = 0; oh < s.OH; ++oh)
            for (int64_t ow = 0; ow < s.OW; ++ow) {
              const int64_t o = ((n * s.OH + oh) * s.OW + ow) * C;
              const int64_t* a = idx ? idx + o : t_a.data();
              if (!idx) argmax_cl(s, xn, oh, ow, t_m.data(), t_a.data());
              const float* g = gy + o;
              int64_t h0, h1, w0, w1;
              window(s, oh, ow, h0, h1, w0, w1);
              for (int64_t h = h0; h < h1; ++h)
                for (int64_t w = w0; w < w1; ++w) {
                  const int64_t pos = h * s.W + w;
                  put_eq(gn + pos * C, a, g, pos, C);
                }
            }
          continue;
        }
        std::memset(gn, 0, sizeof(float) * s.H * s.W * C);
        for (int64_t oh = 0; oh < s.OH; ++oh)
          for (int64_t ow = 0; ow < s.OW; ++ow) {
            const int64_t o = ((n * s.OH + oh) * s.OW + ow) * C;
            const int64_t* a = idx ? idx + o : t_a.data();
            if (!idx) argmax_cl(s, xn, oh, ow, t_m.data(), t_a.data());
            const float* g = gy + o;
            for (int64_t c = 0; c < C; ++c)
              if ((uint64_t)a[c] < (uint64_t)hw) gn[a[c] * C + c] += g[c];
          }
      }
    });
    for (char v : ok)
      if (!v) return false;
    return true;
  }
  parallel_for(s.N * s.C, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.H * s.W)), [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const float* xp = x + pl * s.H * s.W;
      const float* gp = gy + pl * s.OH * s.OW;
      const int64_t* ip = idx ? idx + pl * s.OH * s.OW : nullptr;
      float* gxp = gx + pl * s.H * s.W;
      std::memset(gxp, 0, sizeof(float) * s.H * s.W);
      if (ip) ok[pl] = in_range(ip, s.OH * s.OW, hw);
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          int64_t a;
          if (ip) {
            a = ip[oh * s.OW + ow];
          } else {
            int64_t h0, h1, w0, w1;
            window(s, oh, ow, h0, h1, w0, w1);
            float m = xp[h0 * s.W + w0];
            a = h0 * s.W + w0;
            for (int64_t h = h0; h < h1; ++h)
              for (int64_t w = w0; w < w1; ++w) {
                const float v = xp[h * s.W + w];
                if (better(v, m)) {
                  m = v;
                  a = h * s.W + w;
                }
              }
          }
          if ((uint64_t)a < (uint64_t)hw) gxp[a] += gp[oh * s.OW + ow];
        }
    }
  });
  for (char v : ok)
    if (!v) return false;
  return true;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
