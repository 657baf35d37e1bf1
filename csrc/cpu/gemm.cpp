// gemm.cpp: blocked SGEMM (see gemm.h). Compiled once per ISA; the micro-kernel is one
// template over the ISA's vector type. Tile sizes per ISA:
//   avx512: MR=14 x NR=32 (28 zmm accumulators + 2 B vectors; broadcasts fold into FMAs)
//   avx2:   MR=6  x NR=16 (12 ymm accumulators)
//   baseline (SSE2): MR=6 x NR=8 (12 xmm accumulators)
// Blocking: B packed KC x NC (KC x NR micro-panels stay in L1 while A streams from L2),
// A packed MC x KC. A is read in place (no packing) when K is small, where packing would
// cost as much as the multiply (conv im2col shapes such as K=27); B is read in place when
// its rows are whole NR panels at most 64 floats long (N = 32 or 64 with AVX-512), already the
// packed layout but strided. At most one vector of columns (N <= VL: a classifier head) runs
// on its own path (sgemm_narrow): B's rows read in place with a masked load, 8 rows of A at a
// time, no padding to NR.
// Tests: tests/test_matmul.py, tests/test_gemv.py (the narrow path's bits).
#include "cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"
#include "common/transpose.h"
#include "cpu/scratch.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

#if defined(__AVX512F__)
constexpr int MR = 14, NV = 2;
#elif defined(__AVX2__)
constexpr int MR = 6, NV = 2;
#else
constexpr int MR = 6, NV = 2;
#endif
constexpr int NR = NV * VL;

// Measured on a 2-core Zen 4 VM (AVX-512), square 1024-2048: KC 256 / MC 168 / NC 2048 were
// within noise of the best of KC 192-384, MC 112-336.
constexpr int64_t KC = 256;
constexpr int64_t MC = MR * 12;
constexpr int64_t NC = 2048;
// K at or below this: A is read in place rather than packed.
constexpr int64_t K_DIRECT = 64;


thread_local ScratchFloats<4096> tl_pack_a, tl_pack_b;

// Packs B(k0:k0+kc, j0:j0+nc) into ceil(nc/NR) micro-panels of kc x NR, zero-padded.
void pack_b(const GemmArgs& g, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* out) {
  for (int64_t jp = 0; jp < nc; jp += NR) {
    const int64_t w = std::min<int64_t>(NR, nc - jp);
    float* dst = out + jp * kc;
    const float* src = g.B + k0 * g.rsb + (j0 + jp) * g.csb;
    if (g.csb == 1) {
      for (int64_t k = 0; k < kc; ++k) {
        const float* s = src + k * g.rsb;
        float* d = dst + k * NR;
        if (w == NR) {
          std::memcpy(d, s, sizeof(float) * NR);
        } else {
          int64_t j = 0;
          for (; j < w; ++j) d[j] = s[j];
          for (; j < NR; ++j) d[j] = 0.f;
        }
      }
    } else {
      if (w < NR) std::memset(dst, 0, sizeof(float) * NR * kc);
      for (int64_t j = 0; j < w; ++j) {
        const float* s = src + j * g.csb;
        for (int64_t k = 0; k < kc; ++k) dst[k * NR + j] = s[k * g.rsb];
      }
    }
  }
}

// Packs A(i0:i0+mc, k0:k0+kc) into ceil(mc/MR) micro-panels of kc x MR, zero-padded.
void pack_a(const GemmArgs& g, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* out) {
  for (int64_t ip = 0; ip < mc; ip += MR) {
    const int64_t h = std::min<int64_t>(MR, mc - ip);
    float* dst = out + ip * kc;
    const float* src = g.A + (i0 + ip) * g.rsa + k0 * g.csa;
    if (g.rsa == 1 && h == MR) {
      for (int64_t k = 0; k < kc; ++k) {
        const float* s = src + k * g.csa;
        for (int i = 0; i < MR; ++i) dst[k * MR + i] = s[i];
      }
    } else if (g.csa == 1 && h == MR && MR >= 8) {
      // row-major A: the panel is the transpose of its MR x kc block (8 x 8 blocks in
      // registers; element by element this was ~3% of a 2048^2 product on one thread)
      transpose(src, g.rsa, MR, kc, dst, MR);
#if defined(__AVX2__) && !defined(__AVX512F__)
    } else if (g.csa == 1 && h == MR && MR == 6) {
      // AVX2's 6-row panels: blocks of 8 columns through the 8 x 8 register transpose with two
      // zero rows, the 6 lanes of each result stored masked; the last columns one by one
      const __m256i m6 = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) {
        __m256 r[8], c[8];
        for (int i = 0; i < MR; ++i) r[i] = _mm256_loadu_ps(src + i * g.rsa + k);
        r[6] = r[7] = _mm256_setzero_ps();
        transpose8x8(r, c);
        for (int j = 0; j < 8; ++j) _mm256_maskstore_ps(dst + (k + j) * MR, m6, c[j]);
      }
      for (; k < kc; ++k)
        for (int i = 0; i < MR; ++i) dst[k * MR + i] = src[i * g.rsa + k];
#endif
    } else {
      if (h < MR) std::memset(dst, 0, sizeof(float) * MR * kc);
      for (int64_t i = 0; i < h; ++i) {
        const float* s = src + i * g.rsa;
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = s[k * g.csa];
      }
    }
  }
}

struct Tile {
  vf c[MR][NV];
};

// acc(M rows) = A(M x kc) * B_panel(kc x NR), the sums in registers, each a chain of FMAs
// with k in order from 0 (so any row gives the same bits whatever M it is computed in).
// PACKED: A(i, k) at A[k * MR + i]; otherwise at A[i * ars + k * acs]. B(k, j) at
// B[k * bs + j] (bs = NR when packed). M = MR is the whole tile; the short ones (M < MR,
// below) had a runtime row count that kept the sums in the tile in memory, a store and a
// reload per multiply-add: 16 rows (one tile and 2 rows, an LSTM's row block per thread) of
// (16, 128) x (128, 64) took 2.8 us against 2.0 us for 14.
template <int M, bool PACKED>
inline void micro_rows(int64_t kc, const float* __restrict A, int64_t ars, int64_t acs, const float* __restrict B,
                       int64_t bs, Tile& t) {
  vf c[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) c[i][j] = vf{};
  for (int64_t k = 0; k < kc; ++k) {
    vf b[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) b[j] = loadu(B + k * bs + j * VL);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      const float a = PACKED ? A[k * MR + i] : A[i * ars + k * acs];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) c[i][j] += b[j] * a;
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) t.c[i][j] = c[i][j];
}

// micro_rows<mr> for a runtime 1 <= mr < MR.
template <bool PACKED, int M = 1>
inline void micro_tail(int mr, int64_t kc, const float* A, int64_t ars, int64_t acs, const float* B, int64_t bs,
                       Tile& t) {
  if constexpr (M < MR) {
    if (mr == M)
      micro_rows<M, PACKED>(kc, A, ars, acs, B, bs, t);
    else
      micro_tail<PACKED, M + 1>(mr, kc, A, ars, acs, B, bs, t);
  }
}

// micro_rows<mr> for a runtime 1 <= mr <= MR (rows past mr are not read, their sums in t not
// set): the whole tile first.
template <bool PACKED>
inline void micro(int mr, int64_t kc, const float* A, int64_t ars, int64_t acs, const float* B, int64_t bs, Tile& t) {
  if (mr == MR)
    micro_rows<MR, PACKED>(kc, A, ars, acs, B, bs, t);
  else
    micro_tail<PACKED>(mr, kc, A, ars, acs, B, bs, t);
}

// Writes the tile to C(i0:i0+mr, j0:j0+nr): C = acc + beta * C, then bias/relu if `last`.
// With `bad` (last pass only), folds x * 0 of every value before bias/relu into *bad: NaN
// there means some value was NaN or inf.
inline void store_tile(const GemmArgs& g, const Tile& t, int64_t i0, int64_t j0, int mr, int nr,
                       float beta, bool last, vf* bad) {
  const bool epi = last && (g.bias_n || g.bias_m || g.relu);
  if (mr == MR && nr == NR) {
    vf bn[NV], chk[NV] = {};
    if (epi && g.bias_n)
      for (int j = 0; j < NV; ++j) bn[j] = loadu(g.bias_n + j0 + j * VL);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      float* crow = g.C + (i0 + i) * g.ldc + j0;
      const float bm = (epi && g.bias_m) ? g.bias_m[i0 + i] : 0.f;
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        vf r = t.c[i][j];
        if (beta != 0.f) r += loadu(crow + j * VL) * beta;
        if (bad) chk[j] += r * 0.f;
        if (epi) {
          if (g.bias_n) r += bn[j];
          if (g.bias_m) r += bm;
          if (g.relu) r = vmax(r, vf{});
        }
        storeu(crow + j * VL, r);
      }
    }
    if (bad)
      for (int j = 0; j < NV; ++j) *bad += chk[j];
    return;
  }
  alignas(64) float tmp[MR][NR];
  float chk = 0.f;
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < NV; ++j) storeu(&tmp[i][j * VL], t.c[i][j]);
  for (int i = 0; i < mr; ++i) {
    float* crow = g.C + (i0 + i) * g.ldc + j0;
    for (int j = 0; j < nr; ++j) {
      float r = tmp[i][j];
      if (beta != 0.f) r += beta * crow[j];
      if (bad) chk += r * 0.f;
      if (epi) {
        if (g.bias_n) r += g.bias_n[j0 + j];
        if (g.bias_m) r += g.bias_m[i0 + i];
        if (g.relu) r = r > 0.f ? r : 0.f;
      }
      crow[j] = r;
    }
  }
  if (bad) (*bad)[0] += chk;
}

// Epilogue alone (K == 0): C = beta * C + bias, relu.
void epilogue_only(const GemmArgs& g) {
  for (int64_t i = 0; i < g.M; ++i) {
    float* crow = g.C + i * g.ldc;
    for (int64_t j = 0; j < g.N; ++j) {
      float r = g.beta != 0.f ? g.beta * crow[j] : 0.f;
      if (g.bias_n) r += g.bias_n[j];
      if (g.bias_m) r += g.bias_m[i];
      if (g.relu) r = r > 0.f ? r : 0.f;
      crow[j] = r;
    }
  }
}

// At most one vector of columns (N <= VL, B's rows contiguous): a classifier head's
// (32, 2304) x (2304, 10). The NR-wide path padded B to 2 vectors (a packed K x NR copy per
// thread, 3.2x the multiply-adds at N = 10): 65 us against OpenBLAS's 25 us. Here B's rows are
// read in place with one masked load each, MR rows of A at a time in MR accumulators. The
// summation order is the NR path's (K in the same blocks, each a chain of FMAs from 0 in row
// order, the blocks added to C in order; then bias, ReLU), so the bits are the same.
// Rows per block: A's rows are read in place (a pointer each), so 8 rows keep their pointers
// and accumulators in registers; 14 (MR) spilled both every k.
constexpr int MR1 = 8;

struct Tile1 {
  vf c[MR1];
};

// acc = A(rows x kc) * B(kc x n), n <= VL, as micro<false> with one (masked) vector of B.
// The sums live in a local array copied out at the end: the masked load may read any memory
// as far as the compiler knows, so sums in the caller's tile were stored back before every load.
inline void micro1(int64_t kc, const float* __restrict A, int64_t ars, int64_t acs, int mr,
                   const float* __restrict B, int64_t bs, int n, Tile1& t) {
  vf c[MR1];
#pragma GCC unroll 8
  for (int i = 0; i < MR1; ++i) c[i] = vf{};
  if (mr == MR1) {
    const float* a[MR1];
#pragma GCC unroll 8
    for (int i = 0; i < MR1; ++i) a[i] = A + i * ars;
    for (int64_t k = 0; k < kc; ++k) {
      const vf b = loadu_n(B + k * bs, n);
#pragma GCC unroll 8
      for (int i = 0; i < MR1; ++i) c[i] += b * a[i][k * acs];
    }
  } else {
    for (int64_t k = 0; k < kc; ++k) {
      const vf b = loadu_n(B + k * bs, n);
      for (int i = 0; i < mr; ++i) c[i] += b * A[i * ars + k * acs];
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR1; ++i) t.c[i] = c[i];
}

// C(i0 .. i0 + rows, 0 .. n) = acc + beta * C, then bias/relu if `last` (store_tile's order).
inline void store1(const GemmArgs& g, const Tile1& t, int64_t i0, int rows, float beta, bool last, vf* bad) {
  const int n = static_cast<int>(g.N);
  const bool epi = last && (g.bias_n || g.bias_m || g.relu);
  const vf bn = epi && g.bias_n ? loadu_n(g.bias_n, n) : vf{};
  vf chk{};
  for (int i = 0; i < rows; ++i) {
    float* crow = g.C + (i0 + i) * g.ldc;
    vf r = t.c[i];
    if (beta != 0.f) r += loadu_n(crow, n) * beta;
    if (bad) chk += r * 0.f;  // lanes past n: 0 * 0, never NaN
    if (epi) {
      if (g.bias_n) r += bn;
      if (g.bias_m) r += g.bias_m[i0 + i];
      if (g.relu) r = vmax(r, vf{});
    }
    storeu_n(crow, r, n);
  }
  if (bad) *bad += chk;
}

void sgemm_narrow(const GemmArgs& g) {
  const int64_t kc_step = (g.K + (g.K + KC - 1) / KC - 1) / ((g.K + KC - 1) / KC);
  vf bad{};
  for (int64_t pc = 0; pc < g.K; pc += kc_step) {
    const int64_t kc = std::min<int64_t>(kc_step, g.K - pc);
    const float beta = pc == 0 ? g.beta : 1.f;
    const bool last = pc + kc >= g.K;
    vf* chk = last && g.nonfinite ? &bad : nullptr;
    Tile1 t;
    for (int64_t i0 = 0; i0 < g.M; i0 += MR1) {
      const int rows = static_cast<int>(std::min<int64_t>(MR1, g.M - i0));
      micro1(kc, g.A + i0 * g.rsa + pc * g.csa, g.rsa, g.csa, rows, g.B + pc * g.rsb, g.rsb, static_cast<int>(g.N),
             t);
      store1(g, t, i0, rows, beta, last, chk);
    }
  }
  if (g.nonfinite) {
    bool any = false;
    for (int i = 0; i < VL; ++i) any |= bad[i] != bad[i];
    if (any) __atomic_store_n(g.nonfinite, 1, __ATOMIC_RELAXED);
  }
}

}  // namespace

void sgemm_st(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0) {
    epilogue_only(g);
    return;
  }
  if (g.N <= VL && g.csb == 1) {
    sgemm_narrow(g);
    return;
  }
  // Packing A pays when its micro-panels are reused over many NR panels of B; with few
  // (N <= 2 NR) or a short K the packing costs as much as it saves.
  const bool direct = g.K <= K_DIRECT || g.N <= 2 * NR;
  // Row-major B with rows of at most 256 bytes, cut into whole NR panels: each panel's rows
  // sit at most 256 bytes apart, which streams as well as a packed copy and saves making it.
  // Panel-layout B (bps) is read in place the same way.
  const bool b_direct = g.bps > 0 || (g.csb == 1 && g.N % NR == 0 && std::abs(g.rsb) <= 64);
  const int64_t nc_max = std::min<int64_t>(NC, ((g.N + NR - 1) / NR) * NR);
  // K split into equal blocks of at most KC (288 -> 2 x 144, not 256 + 32).
  const int64_t kc_step = (g.K + (g.K + KC - 1) / KC - 1) / ((g.K + KC - 1) / KC);
  const int64_t kc_max = kc_step;
  float* bp = b_direct ? nullptr : tl_pack_b.get(static_cast<size_t>(nc_max * kc_max));
  float* ap = direct ? nullptr : tl_pack_a.get(static_cast<size_t>(MC * kc_max));
  // The C tile's rows (read when beta is set or after the first K block, then written by
  // store_tile) are prefetched before the micro-kernel runs, when its rows lie far apart (the
  // hardware prefetcher does not follow them) and the tile's K block is long enough to hide
  // the fetch: a C past the caches otherwise missed on every row. Measured (2 threads, Zen 4,
  // AVX-512, builds alternating): 2048^2 188-192 -> 203-204 GF/s, 4096^2 194-197 -> 203-205;
  // on short K blocks with adjacent rows (the im2col shape 28800 x 27 x 32) it cost 6%.
  const bool prefetch_c = kc_max >= 128 && std::abs(g.ldc) >= 256;
  Tile t;
  vf bad{};
  for (int64_t jc = 0; jc < g.N; jc += NC) {
    const int64_t nc = std::min<int64_t>(NC, g.N - jc);
    for (int64_t pc = 0; pc < g.K; pc += kc_step) {
      const int64_t kc = std::min<int64_t>(kc_step, g.K - pc);
      const float beta = pc == 0 ? g.beta : 1.f;
      const bool last = pc + kc >= g.K;
      vf* chk = last && g.nonfinite ? &bad : nullptr;
      if (!b_direct) pack_b(g, pc, kc, jc, nc, bp);
      for (int64_t ic = 0; ic < g.M; ic += MC) {
        const int64_t mc = std::min<int64_t>(MC, g.M - ic);
        if (!direct) pack_a(g, ic, mc, pc, kc, ap);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          const float* bpanel = !b_direct ? bp + jr * kc
                                : g.bps > 0 ? g.B + ((jc + jr) / g.rsb) * g.bps + pc * g.rsb + (jc + jr) % g.rsb
                                            : g.B + pc * g.rsb + jc + jr;
          const int64_t bs = b_direct ? g.rsb : NR;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            if (prefetch_c) {
              const float* c0 = g.C + (ic + ir) * g.ldc + jc + jr;
              for (int i = 0; i < mr; ++i) {
                for (int j = 0; j < nr; j += 16) __builtin_prefetch(c0 + i * g.ldc + j, 1, 3);
                __builtin_prefetch(c0 + i * g.ldc + nr - 1, 1, 3);
              }
            }
            if (direct)
              micro<false>(mr, kc, g.A + (ic + ir) * g.rsa + pc * g.csa, g.rsa, g.csa, bpanel, bs, t);
            else
              micro<true>(mr, kc, ap + ir * kc, 0, 0, bpanel, bs, t);
            store_tile(g, t, ic + ir, jc + jr, mr, nr, beta, last, chk);
          }
        }
      }
    }
  }
  if (g.nonfinite) {
    bool any = false;
    for (int i = 0; i < VL; ++i) any |= bad[i] != bad[i];
    if (any) __atomic_store_n(g.nonfinite, 1, __ATOMIC_RELAXED);
  }
}

void sgemm(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  const double flops = 2.0 * g.M * g.N * (g.K > 0 ? g.K : 1);
  const int T = get_num_threads();
  // Below ~0.5 MFLOP a second thread costs more than it saves.
  if (T == 1 || flops < 5e5) {
    sgemm_st(g);
    return;
  }
  auto rows = [&](int64_t b, int64_t e) {
    GemmArgs s = g;
    s.M = e - b;
    s.A = g.A + b * g.rsa;
    s.C = g.C + b * g.ldc;
    if (g.bias_m) s.bias_m = g.bias_m + b;
    sgemm_st(s);
  };
  if (g.M >= int64_t(T) * MR * 4 && g.K * g.N <= 65536) {
    // B is small (the im2col shapes of convs): rows are handed out dynamically in blocks that
    // shrink as the rows run out (each a remaining/(2T) share, within [4 MR, 8 MC]), so a
    // thread that starts late or is descheduled does not hold up the call and the threads
    // finish together.
    const int64_t cmin = MR * 4, cmax = MC * 8;
    // Full cmax blocks while more than 2T of them remain, then the shrinking tail.
    const int64_t head = std::max<int64_t>(0, g.M / cmax - 2 * T);
    std::vector<int64_t> tail{head * cmax};
    while (tail.back() < g.M) {
      const int64_t rem = g.M - tail.back();
      int64_t c = std::clamp<int64_t>((rem / (2 * T)) / MR * MR, cmin, cmax);
      if (rem - c < cmin) c = rem;
      tail.push_back(tail.back() + c);
    }
    const int64_t nb = head + static_cast<int64_t>(tail.size()) - 1;
    parallel_for(nb, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t c = cb; c < ce; ++c) {
        if (c < head)
          rows(c * cmax, (c + 1) * cmax);
        else
          rows(tail[c - head], tail[c - head + 1]);
      }
    });
  } else if ((g.M >= int64_t(T) * MR * 4 && !(g.M <= 512 && g.K * g.N >= (int64_t(1) << 18) &&
                                               g.N >= int64_t(T) * NR * 4)) ||
             g.N < int64_t(T) * NR) {
    // Split the rows when there are enough of them (each part packs its own copy of B,
    // a K x N cost against (M/T) x N x K flops); otherwise split the columns. A B of 1 MiB
    // or more against at most 512 rows (a language model's prefill against its weights)
    // splits the columns too: each thread then packs only its share of B, read once from
    // memory (128 x 768 x 2304 .. 128 x 3072 x 768, two paired runs on a loaded 2-core VM:
    // 7-15% less CPU time than the row split).
    parallel_for_static(g.M, MR, rows);
  } else {
    // panel-layout B: whole panels per thread
    parallel_for_static(g.N, g.bps > 0 ? g.rsb : NR, [&](int64_t b, int64_t e) {
      GemmArgs s = g;
      s.N = e - b;
      s.B = g.bps > 0 ? g.B + (b / g.rsb) * g.bps : g.B + b * g.csb;
      s.C = g.C + b;
      if (g.bias_n) s.bias_n = g.bias_n + b;
      sgemm_st(s);
    });
  }
}

void sgemm_naive(const GemmArgs& g) {
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < g.N; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < g.K; ++k) s += double(g.A[i * g.rsa + k * g.csa]) * g.B[k * g.rsb + j * g.csb];
      float* c = g.C + i * g.ldc + j;
      float r = static_cast<float>(s);
      if (g.beta != 0.f) r += g.beta * *c;
      if (g.nonfinite && !(r - r == 0.f)) *g.nonfinite = 1;
      if (g.bias_n) r += g.bias_n[j];
      if (g.bias_m) r += g.bias_m[i];
      if (g.relu) r = r > 0.f ? r : 0.f;
      *c = r;
    }
}

const GemmKernels& gemm_kernels() {
  static const GemmKernels k{&sgemm, &sgemm_st, &sgemm_naive, MR, NR};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
