// attention.cpp: flash-style scaled dot-product attention (see attention.h), compiled per ISA.
//
// Forward: K^T of a kv head is packed once per thread and call (panels of NR keys), V read
// in place (packed only when Dv is not a multiple of NR). Query rows run in strips of MR
// (the register rows of the attention micro-kernel), blocks of FWD_QB strips sharing each
// chunk of FWD_BK keys: S = Q K^T for the strip (micro-kernel, Q rows broadcast in place),
// scale + mask + causal limit, online softmax in base 2 (scores times scale * log2 e;
// running max m, sum l, the output accumulator rescaled by 2^(m_old - m_new)), O += P V
// (micro-kernel); then O / l and lse = (m + log2 l) * ln 2. Causal chunks above a strip's
// diagonal are never visited; on the diagonal a row's softmax runs over its causal length.
// The fast kernels report NaN scores or non-finite results (NaN/inf inputs, overflow); the
// binding then reruns the call on the _naive kernels.
// Decode (few query rows, long Lk): one task per (n, kv head, chunk of CK keys) over all the
// group's query rows, partial (m, l, O) per chunk, combined in chunk order (lse weights).
// Backward (FlashAttention-2 style, P recomputed from lse): per key tile dV += P^T dO,
// dP = dO V^T, dS = scale * P * (dP - D_i), dK += dS^T Q, dQ += dS K.
//   fused scheme (N * Hk >= 8): one task per (n, kv head) owns dK, dV and the dQ rows of
//     its group, so every gradient is accumulated in one fixed order;
//   split scheme (fewer heads): tasks over (n, kv head, key tile) for dK/dV and over
//     (n, q head, query tile) for dQ (S, P, dP recomputed in each), so a single head still
//     uses every thread.
// The backward's splits depend on the shape only; the forward's split depends on the thread
// count, but no result bit does (a row's sums run in one fixed order whatever its task).
// The _naive kernels: one query row at a time in double, masked pairs skipped (NaN-safe).
#include "cpu/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include <immintrin.h>

#include "common/parallel.h"
#include "common/simd.h"
#include "common/transpose.h"
#include "cpu/scratch.h"
#include "cpu/vmath.h"
#include "cpu/gemm.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

constexpr float NINF = -std::numeric_limits<float>::infinity();
constexpr float PINF = std::numeric_limits<float>::infinity();

#if defined(__AVX512F__)
constexpr int GEMM_MR = 14;
#else
constexpr int GEMM_MR = 6;
#endif

// Tile sizes. The forward's strips are MR rows (a partial last strip runs with its own row
// count); the backward's query tiles are whole multiples of the GEMM's MR (no partial row
// tile in its P V and dS K products); key chunks and tiles are multiples of 64 (NR of every
// ISA divides 64). Forward, 1 thread, busy VM, process CPU time: FWD_BK 128 / 256 / 512 and FWD_QB 4 /
// 8 / 16 all within +-3% at (8,8,512,64) (89-94 GFLOP/s) and causal (1,16,2048,64) (90-93).
// The earlier forward (sgemm_st per tile, K^T and V re-packed per query tile) ran the same
// shapes at 79-81 and 81-82 GFLOP/s in the same session.
constexpr int MR = GEMM_MR;     // query rows per strip (register rows of the micro-kernel)
constexpr int NV = 2;
constexpr int NR = NV * VL;      // key columns (S) / value columns (O) per micro-kernel tile
constexpr int64_t FWD_BK = 256;  // keys per online-softmax step (multiple of NR)
constexpr int64_t FWD_QB = 8;    // strips per block sharing each key chunk
// Backward, (8,8,512,64) fwd+bwd ratio to torch: BQ 56/BK 64 1.43x, 112/128 1.55-1.56x,
// 224/128 1.53x, 112/256 1.68x (within the noise of the busy VM); causal 112/128 1.9-2.1x.
constexpr int64_t BWD_BQ = GEMM_MR * (GEMM_MR == 14 ? 8 : 16);  // 112 / 96 rows
constexpr int64_t BWD_BK = 128;
// Decode: chunk of keys per task, and the most query rows per kv head it handles.
constexpr int64_t DEC_CK = 512;
constexpr int64_t DEC_MAX_ROWS = 16;
constexpr int64_t DEC_MIN_LK = 2 * DEC_CK;
// Fused backward when there are at least this many (n, kv head) pairs.
constexpr int64_t BWD_FUSED_MIN_HEADS = 8;

// ---------------------------------------------------------------------------------------
// Scratch: per-thread, grown on demand, 64-byte aligned.
thread_local ScratchFloats<64> tl_s, tl_o, tl_dp, tl_ml, tl_dk, tl_dv, tl_part;

// ---------------------------------------------------------------------------------------
static inline vi lane_iota() {
  vi r;
  for (int i = 0; i < VL; ++i) r[i] = i;
  return r;
}

typedef unsigned char vb __attribute__((vector_size(VL)));

// The mask of one query row: element j at base[j * sj].
struct MaskRow {
  int kind = 0;
  const unsigned char* b = nullptr;
  const float* f = nullptr;
  int64_t sj = 0;
};

inline MaskRow mask_row(const AttnArgs& a, int64_t n, int64_t hq, int64_t i) {
  MaskRow m;
  m.kind = a.mask_kind;
  m.sj = a.ms[3];
  const int64_t off = n * a.ms[0] + hq * a.ms[1] + i * a.ms[2];
  if (a.mask_kind == 1) m.b = static_cast<const unsigned char*>(a.mask) + off;
  if (a.mask_kind == 2) m.f = static_cast<const float*>(a.mask) + off;
  return m;
}

// s[0:cols) (raw q.k for keys j0 + c) -> c2 * s + log2(e) * mask (scores in base-2 units),
// -inf where c >= jlim or the mask forbids; lanes up to the next multiple of VL are set to
// -inf. Returns the row max (a max may drop NaN lanes: `nan` is set when a score is NaN).
inline float score_row(float* s, int64_t cols, int64_t jlim, const MaskRow& mr, int64_t j0, float c2, bool& nan) {
  const vi iota = lane_iota();
  const vf ninf = splat(NINF);
  const vi lim = vi{} + static_cast<int>(jlim);
  vf vm = ninf;
  vi vn = vi{};
  for (int64_t c = 0; c < cols; c += VL) {
    vf x = loadu(s + c) * c2;
    const bool full = c + VL <= cols;
    if (mr.kind == 2) {
      vf mv;
      if (full && mr.sj == 1) {
        mv = loadu(mr.f + j0 + c);
      } else {
        mv = vf{};
        for (int l = 0; l < VL && c + l < cols; ++l) mv[l] = mr.f[(j0 + c + l) * mr.sj];
      }
      x += mv * LOG2E;
    } else if (mr.kind == 1) {
      vi mb;
      if (full && mr.sj == 1) {
        vb raw;
        std::memcpy(&raw, mr.b + j0 + c, sizeof raw);
        mb = __builtin_convertvector(raw, vi);
      } else {
        mb = vi{};
        for (int l = 0; l < VL && c + l < cols; ++l) mb[l] = mr.b[(j0 + c + l) * mr.sj];
      }
      x = mb != 0 ? x : ninf;
    }
    x = (iota + static_cast<int>(c)) < lim ? x : ninf;
    storeu(s + c, x);
    vm = vmax(vm, x);
    vn |= x != x;
  }
  for (int l = 0; l < VL; ++l) nan = nan || vn[l] != 0;
  return fmax_(vm);
}

// Max of the raw s[0:cols); `nan` set when one is NaN.
inline float raw_max(const float* s, int64_t cols, bool& nan) {
  vf vm = splat(NINF);
  vi vn = vi{};
  int64_t c = 0;
  for (; c + VL <= cols; c += VL) {
    const vf x = loadu(s + c);
    vm = vmax(vm, x);
    vn |= x != x;
  }
  float m = fmax_(vm);
  for (int l = 0; l < VL; ++l) nan = nan || vn[l] != 0;
  for (; c < cols; ++c) {
    m = s[c] > m ? s[c] : m;
    nan = nan || s[c] != s[c];
  }
  return m;
}

// s[0:cols) = 2^(s - m) (lanes past cols are -inf -> 0); returns the sum.
inline float exp2_row(float* s, int64_t cols, float m) {
  vf acc = vf{};
  const vf vm = splat(m);
  for (int64_t c = 0; c < cols; c += VL) {
    vf p = vexp2(loadu(s + c) - vm);
    storeu(s + c, p);
    acc += p;
  }
  return fsum(acc);
}

// s[0:cols) = 2^(c2 * s - m) for raw scores (no mask); lanes past cols get 0. Returns the sum.
inline float exp2_row_scaled(float* s, int64_t cols, float c2, float m) {
  vf acc = vf{};
  const vf vm = splat(m);
  int64_t c = 0;
  for (; c + VL <= cols; c += VL) {
    vf p = vexp2(loadu(s + c) * c2 - vm);
    storeu(s + c, p);
    acc += p;
  }
  if (c < cols) {
    const vi lim = vi{} + static_cast<int>(cols - c);
    vf p = vexp2(loadu(s + c) * c2 - vm);
    p = lane_iota() < lim ? p : vf{};
    storeu(s + c, p);
    acc += p;
  }
  return fsum(acc);
}

inline int64_t causal_lim(const AttnArgs& a, int64_t i, int64_t j0, int64_t cols) {
  if (!a.causal) return cols;
  const int64_t lim = i - j0 + 1;
  return lim < 0 ? 0 : (lim > cols ? cols : lim);
}

inline void scale_row(float* x, int64_t n, float f) {
  int64_t c = 0;
  for (; c + VL <= n; c += VL) storeu(x + c, loadu(x + c) * f);
  for (; c < n; ++c) x[c] *= f;
}

inline float dot(const float* x, const float* y, int64_t n) {
  vf acc = vf{};
  int64_t c = 0;
  for (; c + VL <= n; c += VL) acc += loadu(x + c) * loadu(y + c);
  float s = fsum(acc);
  for (; c < n; ++c) s += x[c] * y[c];
  return s;
}

inline void axpy(float* y, const float* x, int64_t n, float f) {
  const vf vf_ = splat(f);
  int64_t c = 0;
  for (; c + VL <= n; c += VL) storeu(y + c, loadu(y + c) + loadu(x + c) * vf_);
  for (; c < n; ++c) y[c] += x[c] * f;
}

// True when x[0:n) has no NaN or inf.
inline bool finite_span(const float* x, int64_t n) {
  vf acc = vf{};
  int64_t c = 0;
  for (; c + VL <= n; c += VL) {
    const vf v = loadu(x + c);
    acc += v - v;  // 0 for finite lanes, NaN otherwise
  }
  float t = fsum(acc);
  for (; c < n; ++c) t += x[c] - x[c];
  return t == 0.f;
}

// C(M x N) (+)= A(M x K) B(K x N), strides as in GemmArgs.
inline void mm(int64_t M, int64_t N, int64_t K, const float* A, int64_t rsa, int64_t csa, const float* B,
               int64_t rsb, int64_t csb, float* C, int64_t ldc, float beta) {
  GemmArgs g;
  g.M = M;
  g.N = N;
  g.K = K;
  g.A = A;
  g.rsa = rsa;
  g.csa = csa;
  g.B = B;
  g.rsb = rsb;
  g.csb = csb;
  g.C = C;
  g.ldc = ldc;
  g.beta = beta;
  sgemm_st(g);
}

// ---------------------------------------------------------------------------------------
// Forward: attention micro-kernel and per-head packing.

// C(R x NR) (+)= A(R x kc) B(kc x NR): A(i, k) = A[i * lda + k] (broadcast), B row k =
// NV vectors at B + k * ldb. R = MR for full strips; the strip at the end of Lq runs with its
// own row count (a 2-row tail costs 2/MR of a full strip, not a full one).
template <int R, bool ACC>
inline void amicro_r(int64_t kc, const float* __restrict A, int64_t lda, const float* __restrict B, int64_t ldb,
                     float* __restrict C, int64_t ldc) {
  vf c[R][NV];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) c[i][j] = vf{};
  for (int64_t k = 0; k < kc; ++k) {
    vf b[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) b[j] = loadu(B + k * ldb + j * VL);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const float x = A[i * lda + k];
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) c[i][j] += b[j] * x;
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      float* p = C + i * ldc + j * VL;
      storeu(p, ACC ? c[i][j] + loadu(p) : c[i][j]);
    }
}

template <bool ACC, int R = MR>
inline void amicro(int r, int64_t kc, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                   int64_t ldc) {
  if constexpr (R == 1) {
    amicro_r<1, ACC>(kc, A, lda, B, ldb, C, ldc);
  } else {
    if (r == R) return amicro_r<R, ACC>(kc, A, lda, B, ldb, C, ldc);
    return amicro<ACC, R - 1>(r, kc, A, lda, B, ldb, C, ldc);
  }
}

// K^T of one kv head packed once per (call, n, kv head) and thread: ceil(Lk / NR) panels of
// D x NR (key j of panel p at column j - p NR; keys past Lk are zero). V is read in place
// when Dv is a multiple of NR, else packed into ceil(Dv / NR) zero-padded panels Lk x NR.
struct HeadPack {
  uint64_t call = 0;
  int64_t nh = -1;
};
thread_local HeadPack tl_head;
thread_local ScratchFloats<64> tl_kp, tl_vp;
std::atomic<uint64_t> g_fwd_calls{0};

// K (Lk x D, row-major) -> ceil(Lk / NR) panels of D x NR (transpose.h's 8 x 8 blocks).
void pack_kt(const float* K, int64_t Lk, int64_t D, float* kp) {
  for (int64_t j0 = 0; j0 < Lk; j0 += NR) {
    float* dst = kp + (j0 / NR) * D * NR;
    const int64_t w = std::min<int64_t>(NR, Lk - j0);
    if (w < NR) std::fill(dst, dst + D * NR, 0.f);
    transpose(K + j0 * D, D, w, D, dst, NR);
  }
}

void pack_v(const float* V, int64_t Lk, int64_t Dv, float* vp) {
  for (int64_t c0 = 0; c0 < Dv; c0 += NR) {
    float* dst = vp + (c0 / NR) * Lk * NR;
    const int64_t w = std::min<int64_t>(NR, Dv - c0);
    for (int64_t j = 0; j < Lk; ++j) {
      const float* src = V + j * Dv + c0;
      float* d = dst + j * NR;
      int64_t c = 0;
      for (; c < w; ++c) d[c] = src[c];
      for (; c < NR; ++c) d[c] = 0.f;
    }
  }
}

struct FwdPlan {
  int64_t nstrips = 0;  // query strips of MR rows per head
  int64_t nqg = 1;      // strip groups per head (group g: strips g, g + nqg, ...)
  int64_t Dvp = 0;      // Dv rounded up to NR
  bool vpacked = false;
  uint64_t call = 0;
};

// One task: the strips of group g of head (n, hq), in blocks of FWD_QB strips that share
// each key chunk (K^T and V chunks stay in L2 across the block). A strip's result does not
// depend on its group or block (its products sum over D and over the chunk's keys in one
// fixed order, the chunks are fixed), so neither the split nor the thread count changes bits.
bool fwd_group(const AttnArgs& a, const FwdPlan& P, int64_t n, int64_t hq, int64_t g) {
  const int64_t G = a.Hq / a.Hk, hk = hq / G, D = a.D, Dv = a.Dv, Dvp = P.Dvp, Lk = a.Lk;
  const float* Q = a.q + (n * a.Hq + hq) * a.Lq * D;
  const float* K = attn_k(a, n * a.Hk + hk);
  const float* V = attn_v(a, n * a.Hk + hk);
  const int64_t nkp = (Lk + NR - 1) / NR;
  float* Kp = tl_kp.get(static_cast<size_t>(nkp * NR * D));
  float* Vp = P.vpacked ? tl_vp.get(static_cast<size_t>(Lk * Dvp)) : nullptr;
  const int64_t nhk = n * a.Hk + hk;
  if (tl_head.call != P.call || tl_head.nh != nhk) {
    pack_kt(K, Lk, D, Kp);
    if (P.vpacked) pack_v(V, Lk, Dv, Vp);
    tl_head.call = P.call;
    tl_head.nh = nhk;
  }
  const float* Vb = P.vpacked ? Vp : V;
  const int64_t ldv = P.vpacked ? NR : Dv, vpan = P.vpacked ? Lk * NR : NR;  // panel c at Vb + c * vpan
  float* S = tl_s.get(MR * FWD_BK);
  float* O = tl_o.get(FWD_QB * MR * Dvp);
  float* ml = tl_ml.get(2 * FWD_QB * MR);
  const float c2 = a.scale * LOG2E;  // scores in base-2 units: softmax via 2^x
  const bool plain = a.mask_kind == 0 && c2 > 0.f;
  bool nan = false;                  // a NaN score: the caller reruns the naive kernel
  bool ok = true;
  for (int64_t sb = g; sb < P.nstrips; sb += FWD_QB * P.nqg) {
    int64_t nb = 0;
    int64_t strip[FWD_QB];
    for (int64_t s = sb; s < P.nstrips && nb < FWD_QB; s += P.nqg) strip[nb++] = s;
    std::fill(O, O + nb * MR * Dvp, 0.f);
    std::fill(ml, ml + nb * MR, NINF);
    std::fill(ml + FWD_QB * MR, ml + FWD_QB * MR + nb * MR, 0.f);
    const int64_t last_i0 = strip[nb - 1] * MR;
    const int64_t kend = a.causal ? std::min(Lk, last_i0 + std::min<int64_t>(MR, a.Lq - last_i0)) : Lk;
    for (int64_t j0 = 0; j0 < kend; j0 += FWD_BK) {
      const int64_t chunk = std::min(FWD_BK, kend - j0);
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t i0 = strip[b] * MR, mr = std::min<int64_t>(MR, a.Lq - i0);
        const int64_t se = a.causal ? std::min(Lk, i0 + mr) : Lk;
        if (j0 >= se) continue;
        const int64_t cols = std::min(chunk, se - j0);
        const float* Qs = Q + i0 * D;
        const int rr = static_cast<int>(mr);
        for (int64_t p = 0; p < cols; p += NR) amicro<false>(rr, D, Qs, D, Kp + (j0 + p) * D, NR, S + p, FWD_BK);
        float* Ob = O + b * MR * Dvp;
        float* m = ml + b * MR;
        float* l = ml + FWD_QB * MR + b * MR;
        // Without a mask the short path: a row sees keys [0, lim) of the chunk (lim < cols only
        // on the causal diagonal); max of the raw scores, then one FMA + 2^x per score, zeros
        // past lim. With a mask, score_row applies it.
        for (int64_t r = 0; r < mr; ++r) {
          float* s = S + r * FWD_BK;
          const int64_t lim = causal_lim(a, i0 + r, j0, cols);
          const float mx = plain ? (lim > 0 ? raw_max(s, lim, nan) * c2 : NINF)
                                 : score_row(s, cols, lim, mask_row(a, n, hq, i0 + r), j0, c2, nan);
          const float mnew = std::max(m[r], mx);
          if (mnew == NINF) {
            std::fill(s, s + cols, 0.f);
            continue;
          }
          float sum;
          if (plain) {
            sum = exp2_row_scaled(s, lim, c2, mnew);
            const int64_t z = (lim + VL - 1) / VL * VL;
            if (z < cols) std::fill(s + z, s + cols, 0.f);
          } else {
            sum = exp2_row(s, cols, mnew);
          }
          if (m[r] != mnew) {
            const float alpha = std::exp2(m[r] - mnew);  // 0 when m[r] = -inf
            l[r] *= alpha;
            if (m[r] != NINF) scale_row(Ob + r * Dvp, Dvp, alpha);
            m[r] = mnew;
          }
          l[r] += sum;
        }
        for (int64_t c = 0; c < Dvp; c += NR)
          amicro<true>(rr, cols, S, FWD_BK, Vb + (c / NR) * vpan + j0 * ldv, ldv, Ob + c, Dvp);
      }
    }
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t i0 = strip[b] * MR, mr = std::min<int64_t>(MR, a.Lq - i0);
      const float* Ob = O + b * MR * Dvp;
      const float* m = ml + b * MR;
      const float* l = ml + FWD_QB * MR + b * MR;
      float* out = a.out + ((n * a.Hq + hq) * a.Lq + i0) * Dv;
      float* lse = a.lse + (n * a.Hq + hq) * a.Lq + i0;
      for (int64_t r = 0; r < mr; ++r) {
        if (l[r] > 0.f) {
          const float inv = 1.f / l[r];
          for (int64_t c = 0; c < Dv; ++c) out[r * Dv + c] = Ob[r * Dvp + c] * inv;
          lse[r] = (m[r] + std::log2(l[r])) * LN2;
          ok = ok && finite_span(out + r * Dv, Dv) && lse[r] == lse[r];
        } else {
          std::fill(out + r * Dv, out + (r + 1) * Dv, 0.f);
          lse[r] = l[r] == 0.f ? PINF : std::nanf("");
          ok = ok && l[r] == 0.f;
        }
      }
    }
  }
  return ok && !nan;
}

// Decode helpers with the head dim a compile-time number of vectors (q row and output
// accumulators stay in registers). Generic loops for other head dims.
template <int NV>
void dec_scores_t(const float* q, const float* K, int64_t cols, float* s) {
  constexpr int64_t D = NV * VL;
  vf qv[NV];
  for (int v = 0; v < NV; ++v) qv[v] = loadu(q + v * VL);
  for (int64_t j = 0; j < cols; ++j) {
    const float* k = K + j * D;
    vf acc = qv[0] * loadu(k);
    for (int v = 1; v < NV; ++v) acc += qv[v] * loadu(k + v * VL);
    s[j] = fsum(acc);
  }
}
template <int NV>
void dec_pv_t(const float* p, const float* V, int64_t cols, float* o) {
  constexpr int64_t Dv = NV * VL;
  vf acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = vf{};
  for (int64_t j = 0; j < cols; ++j) {
    const vf pj = splat(p[j]);
    for (int v = 0; v < NV; ++v) acc[v] += pj * loadu(V + j * Dv + v * VL);
  }
  for (int v = 0; v < NV; ++v) storeu(o + v * VL, acc[v]);
}
void dec_scores(const float* q, const float* K, int64_t cols, int64_t D, float* s) {
  if (D % VL == 0) switch (D / VL) {
      case 1: return dec_scores_t<1>(q, K, cols, s);
      case 2: return dec_scores_t<2>(q, K, cols, s);
      case 4: return dec_scores_t<4>(q, K, cols, s);
      case 8: return dec_scores_t<8>(q, K, cols, s);
      default: break;
    }
  for (int64_t j = 0; j < cols; ++j) s[j] = dot(q, K + j * D, D);
}
void dec_pv(const float* p, const float* V, int64_t cols, int64_t Dv, float* o) {
  if (Dv % VL == 0) switch (Dv / VL) {
      case 1: return dec_pv_t<1>(p, V, cols, o);
      case 2: return dec_pv_t<2>(p, V, cols, o);
      case 4: return dec_pv_t<4>(p, V, cols, o);
      case 8: return dec_pv_t<8>(p, V, cols, o);
      default: break;
    }
  std::fill(o, o + Dv, 0.f);
  for (int64_t j = 0; j < cols; ++j) axpy(o, V + j * Dv, Dv, p[j]);
}

// Decode: partial softmax of the group's query rows over one chunk of keys.
// part row layout: [m (base-2 units), l, O(0:Dv)].
void dec_chunk(const AttnArgs& a, int64_t n, int64_t hk, int64_t c, int64_t nc, float* part) {
  const int64_t G = a.Hq / a.Hk, D = a.D, Dv = a.Dv, M = G * a.Lq;
  const int64_t j0 = c * DEC_CK, cols = std::min(DEC_CK, a.Lk - j0);
  const float* Q = a.q + (n * a.Hq + hk * G) * a.Lq * D;
  const float* K = attn_k(a, n * a.Hk + hk) + j0 * D;
  const float* V = attn_v(a, n * a.Hk + hk) + j0 * Dv;
  float* s = tl_s.get(DEC_CK);
  const int64_t W = Dv + 2;
  for (int64_t r = 0; r < M; ++r) {
    const int64_t hq = hk * G + r / a.Lq, i = r % a.Lq;
    float* pr = part + (((n * a.Hk + hk) * nc + c) * M + r) * W;
    dec_scores(Q + r * D, K, cols, D, s);
    bool nan = false;
    const float mx =
        score_row(s, cols, causal_lim(a, i, j0, cols), mask_row(a, n, hq, i), j0, a.scale * LOG2E, nan);
    pr[0] = nan ? std::nanf("") : mx;  // NaN marks the chunk for the combine
    if (mx == NINF) {
      pr[1] = 0.f;
      std::fill(pr + 2, pr + W, 0.f);
      continue;
    }
    pr[1] = exp2_row(s, cols, mx);
    dec_pv(s, V, cols, Dv, pr + 2);
  }
}

bool forward_decode(const AttnArgs& a) {
  std::atomic<bool> ok{true};
  const int64_t G = a.Hq / a.Hk, M = G * a.Lq, Dv = a.Dv, W = Dv + 2;
  const int64_t nc = (a.Lk + DEC_CK - 1) / DEC_CK;
  // Reused per calling thread: a fresh allocation past the mmap threshold would page-fault.
  float* P = tl_part.get(static_cast<size_t>(a.N * a.Hk * nc * M * W));
  parallel_for(a.N * a.Hk * nc, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) dec_chunk(a, t / (a.Hk * nc), (t / nc) % a.Hk, t % nc, nc, P);
  });
  parallel_for(a.N * a.Hk * M, 512,  // cheap: one parallel region for typical sizes
               [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t nh = t / M, r = t % M;  // nh = n * Hk + hk
      const int64_t n = nh / a.Hk, hk = nh % a.Hk, hq = hk * G + r / a.Lq, i = r % a.Lq;
      float mx = NINF;
      bool nan = false;
      for (int64_t c = 0; c < nc; ++c) {
        const float mc = P[((nh * nc + c) * M + r) * W];
        nan = nan || mc != mc;
        mx = std::max(mx, mc);
      }
      if (nan) ok.store(false, std::memory_order_relaxed);
      float* out = a.out + ((n * a.Hq + hq) * a.Lq + i) * Dv;
      float* lse = a.lse + (n * a.Hq + hq) * a.Lq + i;
      std::fill(out, out + Dv, 0.f);
      if (mx == NINF) {
        *lse = PINF;
        continue;
      }
      float L = 0.f;
      for (int64_t c = 0; c < nc; ++c) {
        const float* pr = P + ((nh * nc + c) * M + r) * W;
        if (pr[0] == NINF) continue;
        const float w = std::exp2(pr[0] - mx);
        L += pr[1] * w;
        axpy(out, pr + 2, Dv, w);
      }
      scale_row(out, Dv, 1.f / L);
      *lse = (mx + std::log2(L)) * LN2;
      if (!(finite_span(out, Dv) && *lse == *lse)) ok.store(false, std::memory_order_relaxed);
    }
  });
  return ok.load();
}

bool forward(const AttnArgs& a) {
  if (a.N * a.Hq * a.Lq == 0) return true;
  const int64_t G = a.Hq / a.Hk;
  if (a.Lk == 0) {
    std::fill(a.out, a.out + a.N * a.Hq * a.Lq * a.Dv, 0.f);
    std::fill(a.lse, a.lse + a.N * a.Hq * a.Lq, PINF);
    return true;
  }
  // The decode kernel (no K^T packing) for a few query rows over long keys, and for every
  // plain one-row call (Lq = 1, no mask, not causal: a decode step), whose cost is mostly
  // that packing otherwise. A row's bits depend on the path, so callers that must match a
  // prefill of the same row (a one-token prompt chunk) pass a mask or pad the queries.
  const bool plain_row = a.Lq == 1 && !a.causal && a.mask_kind == 0;
  if (G * a.Lq <= DEC_MAX_ROWS && (a.Lk >= DEC_MIN_LK || plain_row)) return forward_decode(a);
  std::atomic<bool> ok{true};
  FwdPlan P;
  P.nstrips = (a.Lq + MR - 1) / MR;
  P.Dvp = (a.Dv + NR - 1) / NR * NR;
  P.vpacked = a.Dv % NR != 0;
  P.call = g_fwd_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  // Whole heads per task when there are at least 8 per thread (each head packs K^T once);
  // fewer heads are split into strip groups so the last tasks are short (a thread that
  // starts late or is preempted then delays the call by less; each thread packs the heads
  // it works on). (1,8,128,64) at 2 threads on the busy VM, best of 150 samples: 4 tasks per
  // thread 0.185-0.220 ms, 8 per thread 0.194-0.220 ms, 16 per thread 0.211-0.213 ms; the
  // 10th percentile was lower with more tasks. The split changes no result bit (fwd_group).
  const int64_t NH = a.N * a.Hq, want = 8 * static_cast<int64_t>(get_num_threads());
  P.nqg = NH >= want ? 1 : std::min(P.nstrips, (want + NH - 1) / NH);
  parallel_for(NH * P.nqg, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t nh = t / P.nqg;
      if (!fwd_group(a, P, nh / a.Hq, nh % a.Hq, t % P.nqg)) ok.store(false, std::memory_order_relaxed);
    }
  });
  return ok.load();
}

// ---------------------------------------------------------------------------------------
// Backward.

// D_i = rowsum(dO_i * O_i) for rows [r0, r0 + rows) of the flattened (N*Hq*Lq) index.
// Stored in a.lse's sibling buffer `Dr`.
void bwd_tile(const AttnArgs& a, const float* Dr, int64_t n, int64_t hq, int64_t i0, int64_t rows, int64_t j0,
              int64_t cols, float* dKacc, float* dVacc, bool do_kv, bool do_q) {
  const int64_t G = a.Hq / a.Hk, hk = hq / G, D = a.D, Dv = a.Dv;
  const int64_t row0 = (n * a.Hq + hq) * a.Lq + i0;
  const float* Q = a.q + row0 * D;
  const float* dO = a.dout + row0 * Dv;
  const float* lse = a.lse + row0;
  const float* Di = Dr + row0;
  const float* K = attn_k(a, n * a.Hk + hk) + j0 * D;
  const float* V = attn_v(a, n * a.Hk + hk) + j0 * Dv;
  float* S = tl_s.get(BWD_BQ * BWD_BK);
  float* dP = tl_dp.get(BWD_BQ * BWD_BK);
  mm(rows, cols, D, Q, D, 1, K, 1, D, S, BWD_BK, 0.f);
  const float c2 = a.scale * LOG2E;
  const bool plain_tile = a.mask_kind == 0 && c2 > 0.f;
  bool any = false;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = i0 + r;
    float* s = S + r * BWD_BK;
    const float L = lse[r];
    if (!(L < PINF && L > NINF)) {
      std::fill(s, s + ((cols + VL - 1) / VL) * VL, 0.f);
      continue;
    }
    const int64_t lim = causal_lim(a, i, j0, cols);
    if (plain_tile) {
      exp2_row_scaled(s, lim, c2, L * LOG2E);
      const int64_t z = (lim + VL - 1) / VL * VL, zc = (cols + VL - 1) / VL * VL;
      if (z < zc) std::fill(s + z, s + zc, 0.f);
    } else {
      bool nan = false;  // NaN scores give NaN probabilities below, caught by the final check
      score_row(s, cols, lim, mask_row(a, n, hq, i), j0, c2, nan);
      exp2_row(s, cols, L * LOG2E);
    }
    any = true;
  }
  if (!any) return;
  if (do_kv) mm(cols, Dv, rows, S, 1, BWD_BK, dO, Dv, 1, dVacc, Dv, 1.f);
  mm(rows, cols, Dv, dO, Dv, 1, V, 1, Dv, dP, BWD_BK, 0.f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = S + r * BWD_BK;
    float* d = dP + r * BWD_BK;
    const vf di = splat(Di[r]);
    for (int64_t c = 0; c < cols; c += VL) storeu(d + c, loadu(p + c) * (loadu(d + c) - di) * a.scale);
  }
  if (do_kv) mm(cols, D, rows, dP, 1, BWD_BK, Q, D, 1, dKacc, D, 1.f);
  if (do_q) mm(rows, D, cols, dP, BWD_BK, 1, K, D, 1, a.dq + row0 * D, D, 1.f);
}

// First query tile index whose rows can see key j0 (causal), else 0.
inline int64_t first_qb(const AttnArgs& a, int64_t j0) { return a.causal ? j0 / BWD_BQ : 0; }

bool backward_run(const AttnArgs& a) {
  const int64_t G = a.Hq / a.Hk, D = a.D, Dv = a.Dv;
  const int64_t nrows = a.N * a.Hq * a.Lq;
  if (nrows == 0 || a.Lk == 0) {
    std::fill(a.dk, a.dk + a.N * a.Hk * a.Lk * D, 0.f);
    std::fill(a.dv, a.dv + a.N * a.Hk * a.Lk * Dv, 0.f);
    std::fill(a.dq, a.dq + nrows * D, 0.f);
    return true;
  }
  // Every key tile's dK/dV is written whole by its task; dQ rows are zeroed by their owner.
  float* Dr = tl_part.get(static_cast<size_t>(nrows));
  parallel_for(nrows, 256, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float L = a.lse[r];
      Dr[r] = (L < PINF && L > NINF) ? dot(a.dout + r * Dv, a.out + r * Dv, Dv) : 0.f;
    }
  });
  const int64_t nqb = (a.Lq + BWD_BQ - 1) / BWD_BQ, nkb = (a.Lk + BWD_BK - 1) / BWD_BK;
  auto kv_task = [&](int64_t n, int64_t hk, int64_t kb, bool do_q) {
    const int64_t j0 = kb * BWD_BK, cols = std::min(BWD_BK, a.Lk - j0);
    float* dKacc = tl_dk.get(BWD_BK * D);
    float* dVacc = tl_dv.get(BWD_BK * Dv);
    std::fill(dKacc, dKacc + cols * D, 0.f);
    std::fill(dVacc, dVacc + cols * Dv, 0.f);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t qb = first_qb(a, j0); qb < nqb; ++qb) {
        const int64_t i0 = qb * BWD_BQ;
        bwd_tile(a, Dr, n, hk * G + g, i0, std::min(BWD_BQ, a.Lq - i0), j0, cols, dKacc, dVacc, true, do_q);
      }
    std::memcpy(a.dk + ((n * a.Hk + hk) * a.Lk + j0) * D, dKacc, sizeof(float) * cols * D);
    std::memcpy(a.dv + ((n * a.Hk + hk) * a.Lk + j0) * Dv, dVacc, sizeof(float) * cols * Dv);
  };
  if (a.N * a.Hk >= BWD_FUSED_MIN_HEADS) {
    parallel_for(a.N * a.Hk, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / a.Hk, hk = t % a.Hk;
        float* dq0 = a.dq + (n * a.Hq + hk * G) * a.Lq * D;
        std::fill(dq0, dq0 + G * a.Lq * D, 0.f);
        for (int64_t kb = 0; kb < nkb; ++kb) kv_task(n, hk, kb, true);
      }
    });
    return true;
  }
  parallel_for(a.N * a.Hk * nkb, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) kv_task(t / (a.Hk * nkb), (t / nkb) % a.Hk, t % nkb, false);
  });
  parallel_for(a.N * a.Hq * nqb, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t nh = t / nqb, qb = a.causal ? nqb - 1 - t % nqb : t % nqb;
      const int64_t n = nh / a.Hq, hq = nh % a.Hq, i0 = qb * BWD_BQ, rows = std::min(BWD_BQ, a.Lq - i0);
      const int64_t kend = a.causal ? std::min(a.Lk, i0 + rows) : a.Lk;
      float* dq0 = a.dq + ((n * a.Hq + hq) * a.Lq + i0) * D;
      std::fill(dq0, dq0 + rows * D, 0.f);
      for (int64_t j0 = 0; j0 < kend; j0 += BWD_BK)
        bwd_tile(a, Dr, n, hq, i0, rows, j0, std::min(BWD_BK, kend - j0), nullptr, nullptr, false, true);
    }
  });
  return true;
}

bool finite_all(const float* x, int64_t n) {
  std::atomic<bool> ok{true};
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    if (!finite_span(x + b, e - b)) ok.store(false, std::memory_order_relaxed);
  });
  return ok.load();
}

// True when every gradient is finite (else the caller reruns the naive kernel).
bool backward(const AttnArgs& a) {
  backward_run(a);
  return finite_all(a.dq, a.N * a.Hq * a.Lq * a.D) && finite_all(a.dk, a.N * a.Hk * a.Lk * a.D) &&
         finite_all(a.dv, a.N * a.Hk * a.Lk * a.Dv);
}

// ---------------------------------------------------------------------------------------
// Naive kernels: one query row at a time, double accumulation, masked pairs skipped.

// Scores of row (n, hq, i) into s[0:Lk) (double), vis[j] = visible. Returns the max over
// visible keys (NaN if any visible score is NaN), -inf when none is visible.
double naive_scores(const AttnArgs& a, int64_t n, int64_t hq, int64_t i, double* s, unsigned char* vis) {
  const int64_t G = a.Hq / a.Hk, hk = hq / G, D = a.D;
  const float* q = a.q + ((n * a.Hq + hq) * a.Lq + i) * D;
  const float* K = attn_k(a, n * a.Hk + hk);
  const MaskRow mr = mask_row(a, n, hq, i);
  double mx = -HUGE_VAL;
  bool nan = false;
  for (int64_t j = 0; j < a.Lk; ++j) {
    bool ok = !a.causal || j <= i;
    double add = 0.0;
    if (ok && mr.kind == 1) ok = mr.b[j * mr.sj] != 0;
    if (ok && mr.kind == 2) {
      add = mr.f[j * mr.sj];
      ok = add != -HUGE_VAL;
    }
    vis[j] = ok;
    if (!ok) continue;
    double d = 0.0;
    for (int64_t c = 0; c < D; ++c) d += double(q[c]) * K[j * D + c];
    s[j] = d * a.scale + add;
    if (s[j] != s[j]) nan = true;
    else if (s[j] > mx) mx = s[j];
  }
  return nan ? std::nan("") : mx;
}

// Probabilities of the row into s (visible keys only); returns lse (+inf when none visible).
double naive_probs(int64_t Lk, double mx, double* s, const unsigned char* vis) {
  if (mx == -HUGE_VAL) return HUGE_VAL;
  double l = 0.0;
  for (int64_t j = 0; j < Lk; ++j)
    if (vis[j]) {
      s[j] = std::exp(s[j] - mx);
      l += s[j];
    }
  for (int64_t j = 0; j < Lk; ++j)
    if (vis[j]) s[j] /= l;
  return mx + std::log(l);
}

void forward_naive(const AttnArgs& a) {
  const int64_t rows = a.N * a.Hq * a.Lq, G = a.Hq / a.Hk, Dv = a.Dv;
  parallel_for(rows, 8, [&](int64_t b, int64_t e) {
    std::vector<double> s(a.Lk + 1), acc(Dv);
    std::vector<unsigned char> vis(a.Lk + 1);
    for (int64_t t = b; t < e; ++t) {
      const int64_t i = t % a.Lq, nh = t / a.Lq, n = nh / a.Hq, hq = nh % a.Hq, hk = hq / G;
      const double mx = naive_scores(a, n, hq, i, s.data(), vis.data());
      const double L = naive_probs(a.Lk, mx, s.data(), vis.data());
      std::fill(acc.begin(), acc.end(), 0.0);
      const float* V = attn_v(a, n * a.Hk + hk);
      if (L != HUGE_VAL)
        for (int64_t j = 0; j < a.Lk; ++j)
          if (vis[j])
            for (int64_t c = 0; c < Dv; ++c) acc[c] += s[j] * V[j * Dv + c];
      for (int64_t c = 0; c < Dv; ++c) a.out[t * Dv + c] = static_cast<float>(acc[c]);
      a.lse[t] = static_cast<float>(L);
    }
  });
}

void backward_naive(const AttnArgs& a) {
  const int64_t G = a.Hq / a.Hk, D = a.D, Dv = a.Dv;
  // One task per (n, kv head): it owns dK, dV of that head and dQ of its group.
  parallel_for(a.N * a.Hk, 1, [&](int64_t b, int64_t e) {
    std::vector<double> s(a.Lk + 1), dp(a.Lk + 1), dq(D);
    std::vector<unsigned char> vis(a.Lk + 1);
    std::vector<double> dk(a.Lk * D), dv(a.Lk * Dv);
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / a.Hk, hk = t % a.Hk;
      const float* K = attn_k(a, t);
      const float* V = attn_v(a, t);
      std::fill(dk.begin(), dk.end(), 0.0);
      std::fill(dv.begin(), dv.end(), 0.0);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t hq = hk * G + g;
        for (int64_t i = 0; i < a.Lq; ++i) {
          const int64_t row = (n * a.Hq + hq) * a.Lq + i;
          const float* q = a.q + row * D;
          const float* dO = a.dout + row * Dv;
          std::fill(dq.begin(), dq.end(), 0.0);
          const double mx = naive_scores(a, n, hq, i, s.data(), vis.data());
          const double L = naive_probs(a.Lk, mx, s.data(), vis.data());
          if (L != HUGE_VAL) {
            double Di = 0.0;
            for (int64_t j = 0; j < a.Lk; ++j)
              if (vis[j]) {
                double d = 0.0;
                for (int64_t c = 0; c < Dv; ++c) d += double(dO[c]) * V[j * Dv + c];
                dp[j] = d;
                Di += s[j] * d;
              }
            for (int64_t j = 0; j < a.Lk; ++j)
              if (vis[j]) {
                const double ds = s[j] * (dp[j] - Di) * a.scale;
                for (int64_t c = 0; c < D; ++c) {
                  dq[c] += ds * K[j * D + c];
                  dk[j * D + c] += ds * q[c];
                }
                for (int64_t c = 0; c < Dv; ++c) dv[j * Dv + c] += s[j] * dO[c];
              }
          }
          for (int64_t c = 0; c < D; ++c) a.dq[row * D + c] = static_cast<float>(dq[c]);
        }
      }
      for (int64_t x = 0; x < a.Lk * D; ++x) a.dk[t * a.Lk * D + x] = static_cast<float>(dk[x]);
      for (int64_t x = 0; x < a.Lk * Dv; ++x) a.dv[t * a.Lk * Dv + x] = static_cast<float>(dv[x]);
    }
  });
}

}  // namespace

const AttentionKernels& attention_kernels() {
  static const AttentionKernels k{&forward, &backward, &forward_naive, &backward_naive};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
