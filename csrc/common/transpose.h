// transpose.h: an out-of-place float transpose with 8x8 blocks in ymm registers (AVX2 builds),
// shared by the conv (grad_x layouts), attention (K^T panels) and GEMM (A panels) kernels.
// Include only from csrc/cpu/ files (they are compiled with PYAIML_ISA_NS defined).
#pragma once
#include <algorithm>
#include <cstdint>

#include <immintrin.h>

namespace pyaiml {
namespace PYAIML_ISA_NS {

#if defined(__AVX2__)
// c[j] = column j of the 8 x 8 block whose rows are r[0..7] (lane i of c[j] = lane j of r[i]).
inline void transpose8x8(const __m256 r[8], __m256 c[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]),
               t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]),
               t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]),
               t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
               u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
               u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
               u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  c[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  c[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  c[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  c[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  c[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  c[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  c[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  c[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}
#endif

// dst[j*ld + i] = src[i*ls + j] for i < rows, j < cols; 8x8 blocks in ymm registers where the
// ISA has them (the scalar copy was ~35% of cnn-a1's grad_x).
inline void transpose(const float* src, int64_t ls, int64_t rows, int64_t cols, float* dst, int64_t ld) {
  int64_t i0 = 0;
#if defined(__AVX2__)
  // The last block of rows/columns is moved back to overlap the previous one (rewriting the
  // same values) rather than done element by element.
  for (int64_t ib = 0; rows >= 8 && ib < rows; ib += 8) {
    i0 = std::min(ib, rows - 8);
    for (int64_t jb = 0; cols >= 8 && jb < cols; jb += 8) {
      const int64_t j0 = std::min(jb, cols - 8);
      const float* q = src + i0 * ls + j0;
      __m256 r[8], c[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(q + i * ls);
      transpose8x8(r, c);
      float* d = dst + j0 * ld + i0;
      for (int j = 0; j < 8; ++j) _mm256_storeu_ps(d + j * ld, c[j]);
    }
    if (cols < 8)
      for (int64_t j = 0; j < cols; ++j)
        for (int64_t i = i0; i < i0 + 8; ++i) dst[j * ld + i] = src[i * ls + j];
  }
  if (rows >= 8) return;
#endif
  for (; i0 < rows; ++i0)
    for (int64_t j = 0; j < cols; ++j) dst[j * ld + i0] = src[i0 * ls + j];
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
