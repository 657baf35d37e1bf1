// norm.cpp: LayerNorm / RMSNorm rows (norm.h), per ISA.
// Tests: tests/test_norm.py.
#include "cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

// Sum of a row: VL lanes accumulated in order, then the lanes and the tail in order.
inline float row_sum(const float* x, int64_t n, float shift, bool square) {
  vf acc = vf{};
  const vf s = splat(shift);
  int64_t i = 0;
  for (; i + VL <= n; i += VL) {
    const vf d = loadu(x + i) - s;
    acc += square ? d * d : d;
  }
  float r = 0.f;
  for (int l = 0; l < VL; ++l) r += acc[l];
  for (; i < n; ++i) {
    const float d = x[i] - shift;
    r += square ? d * d : d;
  }
  return r;
}

void one_row(const NormArgs& a, const float* x, float* y) {
  const int64_t n = a.n;
  float mean = 0.f, scale;
  if (a.rms) {
    scale = 1.f / std::sqrt(row_sum(x, n, 0.f, true) / static_cast<float>(n) + a.eps);
  } else {
    mean = row_sum(x, n, 0.f, false) / static_cast<float>(n);
    scale = 1.f / std::sqrt(row_sum(x, n, mean, true) / static_cast<float>(n) + a.eps);
  }
  const vf m = splat(mean), s = splat(scale);
  int64_t i = 0;
  for (; i + VL <= n; i += VL) {
    vf v = (loadu(x + i) - m) * s;
    if (a.w) v *= loadu(a.w + i);
    if (a.b) v += loadu(a.b + i);
    storeu(y + i, v);
  }
  for (; i < n; ++i) {
    float v = (x[i] - mean) * scale;
    if (a.w) v *= a.w[i];
    if (a.b) v += a.b[i];
    y[i] = v;
  }
}

}  // namespace

void norm(const NormArgs& a) {
  if (a.rows <= 0 || a.n <= 0) return;
  // ~16K elements per task: a decode row runs on the caller alone
  const int64_t grain = std::max<int64_t>(1, 16384 / a.n);
  parallel_for(a.rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) one_row(a, a.x + r * a.ldx, a.y + r * a.n);
  });
}

namespace {

constexpr int64_t kChunk = 32;  // rows per partial weight-gradient sum

// One row's gradients; xh and d are (n,) scratch. Adds g xhat and g into sw / sb when set.
void back_row(const NormBackArgs& a, const float* g, const float* x, float* dx, float* sw, float* sb, float* xh,
              float* d) {
  const int64_t n = a.n;
  const float fn = static_cast<float>(n);
  const float mean = row_sum(x, n, 0.f, false) / fn;
  const float rstd = 1.f / std::sqrt(row_sum(x, n, mean, true) / fn + a.eps);
  const vf m = splat(mean), s = splat(rstd);
  vf s1 = vf{}, s2 = vf{};
  int64_t i = 0;
  for (; i + VL <= n; i += VL) {
    const vf h = (loadu(x + i) - m) * s, gv = loadu(g + i);
    const vf dv = a.w ? gv * loadu(a.w + i) : gv;
    s1 += dv;
    s2 += dv * h;
    storeu(xh + i, h);
    storeu(d + i, dv);
    if (sw) storeu(sw + i, loadu(sw + i) + gv * h);
    if (sb) storeu(sb + i, loadu(sb + i) + gv);
  }
  float t1 = 0.f, t2 = 0.f;
  for (int l = 0; l < VL; ++l) {
    t1 += s1[l];
    t2 += s2[l];
  }
  for (; i < n; ++i) {
    const float h = (x[i] - mean) * rstd, dv = a.w ? g[i] * a.w[i] : g[i];
    t1 += dv;
    t2 += dv * h;
    xh[i] = h;
    d[i] = dv;
    if (sw) sw[i] += g[i] * h;
    if (sb) sb[i] += g[i];
  }
  if (!dx) return;
  const float m1 = t1 / fn, m2 = t2 / fn;
  const vf v1 = splat(m1), v2 = splat(m2);
  for (i = 0; i + VL <= n; i += VL) storeu(dx + i, s * (loadu(d + i) - v1 - loadu(xh + i) * v2));
  for (; i < n; ++i) dx[i] = rstd * (d[i] - m1 - xh[i] * m2);
}

}  // namespace

void layer_norm_backward(const NormBackArgs& a) {
  const int64_t R = a.rows, n = a.n;
  if (R <= 0 || n <= 0) return;
  const int64_t C = (R + kChunk - 1) / kChunk;
  std::vector<float> pw(a.dw ? static_cast<size_t>(C * n) : 0), pb(a.db ? static_cast<size_t>(C * n) : 0);
  parallel_for(C, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> scratch(static_cast<size_t>(2 * n));
    for (int64_t c = c0; c < c1; ++c) {
      float* sw = a.dw ? pw.data() + c * n : nullptr;
      float* sb = a.db ? pb.data() + c * n : nullptr;
      if (sw) std::fill(sw, sw + n, 0.f);
      if (sb) std::fill(sb, sb + n, 0.f);
      for (int64_t r = c * kChunk; r < std::min(R, (c + 1) * kChunk); ++r)
        back_row(a, a.g + r * n, a.x + r * n, a.dx ? a.dx + r * n : nullptr, sw, sb, scratch.data(),
                 scratch.data() + n);
    }
  });
  for (auto [out, part] : {std::pair<float*, const std::vector<float>*>{a.dw, &pw}, {a.db, &pb}}) {
    if (!out) continue;
    std::fill(out, out + n, 0.f);
    for (int64_t c = 0; c < C; ++c) {  // chunk order: the same sums for any thread count
      const float* p = part->data() + c * n;
      for (int64_t i = 0; i < n; ++i) out[i] += p[i];
    }
  }
}

const NormKernels& norm_kernels() {
  static const NormKernels k{&norm, &layer_norm_backward};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
