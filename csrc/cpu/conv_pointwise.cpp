// conv_pointwise.cpp: the 1x1, stride-1, unpadded channels-last conv without groups, compiled
// once per ISA. Its pixels are the rows of a (P, C) matrix (P = N*H*W) and the conv is
//   y[p, 0:OC] = b + sum_c x[p, c] Wr[c, 0:OC]            (Wr = w transposed, o padded)
// one register tile of M pixels x V vectors of outputs at a time: the tile's x rows and all
// of Wr (C x OCp floats) stay in L1 while the tile walks the output blocks, each x value is
// one broadcast, and the last partial vector of a row is a masked store. The direct kernel it
// replaces for these shapes (conv_direct.cpp) reads x through a table of tap offsets and keeps
// its sums on the stack between the reduction and the stores; the MobileNet shapes ran at
// ~40% of the FMA peak there.
// conv.cpp also sends grad_x here (gy W: a 1x1 conv of gy with the transposed weights), and
// grad_w when C > OC (conv_gw_pointwise, at the end). Outputs of 32 MB or more leave through
// non-temporal stores; on AVX-512 a row's last vector of at most 8 lanes is a ymm.
// Each output row is one fixed-order sum over c, whatever the tiling and thread count.
// Not here: grad_w with C <= OC and grad_b (conv_direct.cpp), the choice of kernel (conv.cpp).
// Tests: tests/test_conv_algorithms.py (every tile and tail, against the _naive kernel, thread-count
// independence, every ISA), tests/test_conv_depthwise.py (1x1 rows against torch).
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/conv.h"
#include "cpu/conv_common.h"
#include "cpu/conv_tiles.h"
#include "cpu/finite.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {
namespace {

#if defined(__AVX512F__)
constexpr int kAcc = 24;  // accumulators of the 32 zmm registers
#else
constexpr int kAcc = 12;  // of 16 ymm / xmm
#endif
constexpr int kMaxV = 3;  // output vectors per tile

// Cache lines to prefetch while a tile computes: the next tile's x rows (read) and y rows
// (written), `per` lines of each per step of the reduction.
struct Prefetch {
  const char* x;
  int64_t nx;
  const char* y;
  int64_t ny;
  int64_t per;
};

#if defined(__AVX512F__)
typedef float vh __attribute__((vector_size(32)));  // a half vector: 8 lanes (ymm)
typedef float vh_u __attribute__((vector_size(32), aligned(1)));
#endif

// y[i, 0:nc] for M pixels (x rows C apart, y rows ldy apart), V vectors of Wr from column 0;
// with H (AVX-512 only) the last of the V is a half vector: outputs whose last vector holds
// at most 8 lanes (OC = 24: one zmm and one ymm, where two zmm multiplied 8 lanes of zeros;
// Zen 4 retires two ymm or one zmm multiply-add per cycle).
template <int M, int V, bool H>
void pw_tile(const float* x, int64_t C, const float* wr, int64_t ldw, const float* bias, bool relu, float* y,
             int64_t ldy, int64_t nc, const Prefetch& pf) {
  constexpr int F = V - (H ? 1 : 0);  // full vectors
  vf acc[M][F > 0 ? F : 1];
#pragma GCC unroll 8
  for (int v = 0; v < F; ++v) {
    const vf b0 = bias ? loadu(bias + v * VL) : vf{};
#pragma GCC unroll 32
    for (int i = 0; i < M; ++i) acc[i][v] = b0;
  }
#if defined(__AVX512F__)
  vh acch[H ? M : 1];
  if constexpr (H) {
    const vh b0 = bias ? *reinterpret_cast<const vh_u*>(bias + F * VL) : vh{};
#pragma GCC unroll 32
    for (int i = 0; i < M; ++i) acch[i] = b0;
  }
#else
  static_assert(!H, "half vectors are an AVX-512 tile");
#endif
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t j = c * pf.per, je = j + pf.per; j < je; ++j) {
      if (j < pf.nx) __builtin_prefetch(pf.x + j * 64, 0, 3);
      if (j < pf.ny) __builtin_prefetch(pf.y + j * 64, 1, 3);
    }
    vf wv[F > 0 ? F : 1];
#pragma GCC unroll 8
    for (int v = 0; v < F; ++v) wv[v] = loadu(wr + c * ldw + v * VL);
#if defined(__AVX512F__)
    vh wh{};
    if constexpr (H) wh = *reinterpret_cast<const vh_u*>(wr + c * ldw + F * VL);
#endif
#pragma GCC unroll 32
    for (int i = 0; i < M; ++i) {
      const vf a = bcast(x + i * C + c);
#pragma GCC unroll 8
      for (int v = 0; v < F; ++v) acc[i][v] += a * wv[v];
#if defined(__AVX512F__)
      if constexpr (H) acch[i] += (vh)_mm512_castps512_ps256((__m512)a) * wh;
#endif
    }
  }
  if (relu) {
#pragma GCC unroll 32
    for (int i = 0; i < M; ++i) {
#pragma GCC unroll 8
      for (int v = 0; v < F; ++v) acc[i][v] = vmax(acc[i][v], vf{});
#if defined(__AVX512F__)
      if constexpr (H) acch[i] = acch[i] > vh{} ? acch[i] : vh{};
#endif
    }
  }
  const int last = int(nc - (V - 1) * VL);  // lanes of the last vector, 1..VL (H: 1..8)
#if defined(__AVX512F__)
  if constexpr (H) {
#pragma GCC unroll 32
    for (int i = 0; i < M; ++i) {
#pragma GCC unroll 8
      for (int v = 0; v < F; ++v) storeu(y + i * ldy + v * VL, acc[i][v]);
      _mm256_mask_storeu_ps(y + i * ldy + F * VL, (__mmask8)((1u << last) - 1), (__m256)acch[i]);
    }
    return;
  }
#endif
  if (last == VL) {
#pragma GCC unroll 32
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) storeu(y + i * ldy + v * VL, acc[i][v]);
  } else {
#pragma GCC unroll 32
    for (int i = 0; i < M; ++i) {
#pragma GCC unroll 8
      for (int v = 0; v < V - 1; ++v) storeu(y + i * ldy + v * VL, acc[i][v]);
      storeu_n(y + i * ldy + (V - 1) * VL, acc[i][V - 1], last);
    }
  }
}

using PwFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, bool, float*, int64_t, int64_t,
                     const Prefetch&);

template <int V, bool H, size_t... I>
constexpr std::array<PwFn, sizeof...(I)> pw_table(std::index_sequence<I...>) {
  return {&pw_tile<int(I) + 1, V, H>...};
}
// Tiles of V vectors: M = kAcc / V pixels (kPw[V - 1][m - 1] for a partial tile of m).
constexpr auto kPw1 = pw_table<1, false>(std::make_index_sequence<kAcc>{});
constexpr auto kPw2 = pw_table<2, false>(std::make_index_sequence<kAcc / 2>{});
constexpr auto kPw3 = pw_table<3, false>(std::make_index_sequence<kAcc / 3>{});
#if defined(__AVX512F__)
constexpr bool kHalf = true;
constexpr auto kPw1h = pw_table<1, true>(std::make_index_sequence<kAcc>{});
constexpr auto kPw2h = pw_table<2, true>(std::make_index_sequence<kAcc / 2>{});
constexpr auto kPw3h = pw_table<3, true>(std::make_index_sequence<kAcc / 3>{});
inline PwFn pw_fn(int V, int64_t m, bool h) {
  if (h) return V == 1 ? kPw1h[m - 1] : V == 2 ? kPw2h[m - 1] : kPw3h[m - 1];
  return V == 1 ? kPw1[m - 1] : V == 2 ? kPw2[m - 1] : kPw3[m - 1];
}
#else
constexpr bool kHalf = false;
inline PwFn pw_fn(int V, int64_t m, bool) { return V == 1 ? kPw1[m - 1] : V == 2 ? kPw2[m - 1] : kPw3[m - 1]; }
#endif

// n floats from s to d, the 64-byte-aligned body with non-temporal stores (no read for
// ownership of lines that are wholly overwritten); the caller fences (sfence) once.
inline void stream_copy(float* d, const float* s, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  const int64_t head = std::min<int64_t>(n, int64_t((64 - (reinterpret_cast<uintptr_t>(d) & 63)) & 63) / 4);
  for (; i < head; ++i) d[i] = s[i];
  for (; i + VL <= n; i += VL) stream(d + i, loadu(s + i));
#endif
  for (; i < n; ++i) d[i] = s[i];
}


thread_local std::vector<float> t_ybuf;

// The forward's transposed weights Wr (C x OCp) of the last few weight arrays, reused while
// the array holds the same values: a layer called again with unchanged weights (inference)
// skips the transpose, which cost more than the product itself on small maps (MobileNetV3's
// squeeze-and-excite 1x1 convs on 1x1 maps, N8, 576 -> 144: 66 us a call, 45 of them the
// transpose). An entry matches on the pointer, the shape and a comparison of the whole array
// with the copy taken when it was packed, so changed weights (a training step, a reused
// buffer) are packed again; the same bits either way.
struct PackedEntry {
  const float* src;
  int64_t OC, C, OCp;
  std::vector<float> copy;
  std::shared_ptr<const std::vector<float>> packed;
};
constexpr size_t kPackEntries = 64;
constexpr int64_t kPackMaxFloats = int64_t(1) << 20;  // weights above 4 MB are packed each call
constexpr int64_t kPackTotalFloats = int64_t(1) << 22;  // copies + packed, all entries: 16 MB
std::mutex g_pack_mutex;
std::vector<PackedEntry> g_pack_cache;  // most recently used last
int64_t g_pack_floats = 0;

std::shared_ptr<const std::vector<float>> packed_weights(const ConvShape& s, const float* w, int64_t OCp) {
  const int64_t n = s.OC * s.C;
  auto pack = [&] {
    return std::make_shared<const std::vector<float>>(pack_weights(w, weight_pack(WLayout::kGKCO, s, OCp)));
  };
  if (n > kPackMaxFloats) return pack();
  {
    std::lock_guard<std::mutex> lk(g_pack_mutex);
    for (size_t i = g_pack_cache.size(); i-- > 0;) {
      PackedEntry& e = g_pack_cache[i];
      if (e.src == w && e.OC == s.OC && e.C == s.C && e.OCp == OCp &&
          std::memcmp(e.copy.data(), w, sizeof(float) * n) == 0) {
        auto hit = e.packed;
        std::rotate(g_pack_cache.begin() + i, g_pack_cache.begin() + i + 1, g_pack_cache.end());
        return hit;
      }
    }
  }
  auto packed = pack();
  std::lock_guard<std::mutex> lk(g_pack_mutex);
  auto drop = [](size_t i) {
    g_pack_floats -= static_cast<int64_t>(g_pack_cache[i].copy.size() + g_pack_cache[i].packed->size());
    g_pack_cache.erase(g_pack_cache.begin() + static_cast<int64_t>(i));
  };
  for (size_t i = 0; i < g_pack_cache.size(); ++i)
    if (g_pack_cache[i].src == w) {  // this array's old values: replaced
      drop(i);
      break;
    }
  const int64_t add = n + static_cast<int64_t>(packed->size());
  while (!g_pack_cache.empty() && (g_pack_cache.size() >= kPackEntries || g_pack_floats + add > kPackTotalFloats))
    drop(0);  // the least recently used
  g_pack_cache.push_back({w, s.OC, s.C, OCp, std::vector<float>(w, w + n), packed});
  g_pack_floats += add;
  return packed;
}

}  // namespace

bool pointwise_ok(const ConvShape& s) {
  return s.cl && s.G == 1 && s.KH == 1 && s.KW == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 &&
         s.OH == s.H && s.OW == s.W;
}

void conv2d_forward_pointwise(const ConvShape& s, const float* x, const float* w, const float* b, bool relu,
                              float* y, bool* x_finite) {
  const int64_t C = s.C, OC = s.OC, P = s.N * s.H * s.W, nv = (OC + VL - 1) / VL, OCp = nv * VL;
  const auto wrp = packed_weights(s, w, OCp);  // Wr[c][o]
  const std::vector<float>& wr = *wrp;
  std::vector<float> bp;
  if (b) bp = pack_weights(b, weight_pack(WLayout::kGKCO, 1, OC, 1, 1, OCp));
  // Output blocks of at most kMaxV vectors, near-equal (9 vectors: 3 + 3 + 3, 4: 2 + 2).
  const int64_t nblk = (nv + kMaxV - 1) / kMaxV, vper = (nv + nblk - 1) / nblk;
  // The pixel tile is the widest block's: every block of a tile reads the same M rows of x.
  const int64_t M = kAcc / vper;
  const int64_t tiles = (P + M - 1) / M;
  // >= ~256 K multiply-adds per task.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, M * C * OC));
  const bool nt = P * OC * 4 >= kStreamBytes;
  std::atomic<bool> bad{false};
  parallel_for(tiles, grain, [&](int64_t tb, int64_t te) {
    float* buf = nullptr;
    if (nt) {
      if (t_ybuf.size() < size_t(M * OC)) t_ybuf.resize(M * OC);
      buf = t_ybuf.data();
    }
    for (int64_t t = tb; t < te; ++t) {
      const int64_t p0 = t * M, m = std::min(M, P - p0);
      const float* xt = x + p0 * C;
      float* yt = nt ? buf : y + p0 * OC;
      // The next tile's x and y while this one computes (its first block): the stores missed
      // every cache and x streamed in on the hardware prefetcher alone (N32 56x56, 1 thread:
      // ~24 G multiply-adds/s against ~40 for the same kernel on a cache-resident N1).
      const int64_t mn = t + 1 < te ? std::min(M, P - p0 - M) : 0;
      Prefetch pf{reinterpret_cast<const char*>(xt + m * C), (mn * C * 4 + 63) / 64,
                  reinterpret_cast<const char*>(y + (p0 + m) * OC), nt ? 0 : (mn * OC * 4 + 63) / 64, 0};
      pf.per = (std::max(pf.nx, pf.ny) + C - 1) / C;
      const Prefetch none{nullptr, 0, nullptr, 0, 0};
      // x's NaN/inf check on the tile's rows, in cache from the previous tile's prefetch
      if (x_finite && !finite_kernels().f32(xt, m * C)) bad.store(true, std::memory_order_relaxed);
      for (int64_t v0 = 0; v0 < nv; v0 += vper) {
        const int V = int(std::min(vper, nv - v0));
        const int64_t o0 = v0 * VL;
        // a narrower last block keeps the tile's M: at most kAcc / vper <= kAcc / V rows
        const int64_t nc = std::min<int64_t>(V * VL, OC - o0);
        // the row's last vector as a half when it holds at most half the lanes
        const bool h = kHalf && v0 + V == nv && nc - (V - 1) * VL <= VL / 2;
        pw_fn(V, m, h)(xt, C, wr.data() + o0, OCp, b ? bp.data() + o0 : nullptr, relu, yt + o0, OC, nc,
                       v0 == 0 ? pf : none);
      }
      if (nt) stream_copy(y + p0 * OC, buf, m * OC);
    }
    if (nt) stream_fence();  // the streamed stores are visible before the pool's join
  });
  if (x_finite) *x_finite = !bad.load();
}


namespace {

// out[r, 0:V*VL] += sum over n pixels of b[p, r] * a[p, 0:V*VL] for R rows r (a rows lda
// apart, b rows ldb apart), the sums in registers over the pixels.
template <int R, int V>
void pw_gw_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t n, float* out, int64_t ldo) {
  vf acc[R][V];
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = loadu(out + r * ldo + v * VL);
  for (int64_t p = 0; p < n; ++p) {
    vf av[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) av[v] = loadu(a + p * lda + v * VL);
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
      const vf bb = bcast(b + p * ldb + r);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] += bb * av[v];
    }
  }
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) storeu(out + r * ldo + v * VL, acc[r][v]);
}

using PwGwFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t);

template <int V, size_t... I>
constexpr std::array<PwGwFn, sizeof...(I)> pw_gw_table(std::index_sequence<I...>) {
  return {&pw_gw_tile<int(I) + 1, V>...};
}
constexpr auto kGw1 = pw_gw_table<1>(std::make_index_sequence<kAcc>{});
constexpr auto kGw2 = pw_gw_table<2>(std::make_index_sequence<kAcc / 2>{});
constexpr auto kGw3 = pw_gw_table<3>(std::make_index_sequence<kAcc / 3>{});

inline PwGwFn pw_gw_fn(int V, int64_t r) { return V == 1 ? kGw1[r - 1] : V == 2 ? kGw2[r - 1] : kGw3[r - 1]; }

}  // namespace

// grad_w[o, c] = sum_p gy[p, o] x[p, c] over the P = N*H*W pixels, x's channels in vector
// lanes and gy's broadcast (conv.cpp sends the shapes with C > OC here: 96 -> 24 fills six
// vectors of c where the direct kernel's o vectors held 8 lanes of zeros in 32). Pixels are
// summed in fixed chunks of kChunk, each chunk's partial sums then added in chunk order: no
// result depends on the thread count.
void conv2d_gw_pointwise(const ConvShape& s, const float* gy, const float* x, float* gw) {
  constexpr int64_t kChunk = 512;
  const int64_t C = s.C, OC = s.OC, P = s.N * s.H * s.W, nv = (C + VL - 1) / VL, ldo = nv * VL;
  const int64_t nblk = (nv + kMaxV - 1) / kMaxV, vper = (nv + nblk - 1) / nblk, rows = kAcc / vper;
  const int64_t chunks = (P + kChunk - 1) / kChunk, psz = OC * ldo;
  std::vector<float> part(chunks * psz, 0.f);
  // A partial last vector reads past its pixel's row (lanes >= C, never used); the input's
  // last pixel goes through a padded copy of its row instead.
  std::vector<float> xlast;
  if (C % VL) {
    xlast.assign(ldo, 0.f);
    std::copy(x + (P - 1) * C, x + P * C, xlast.begin());
  }
  parallel_for(chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t ch = cb; ch < ce; ++ch) {
      const int64_t p0 = ch * kChunk, n = std::min(kChunk, P - p0);
      const int64_t nin = (C % VL && p0 + n == P) ? n - 1 : n;
      float* out = part.data() + ch * psz;
      for (int64_t r0 = 0; r0 < OC; r0 += rows) {
        const int64_t r = std::min(rows, OC - r0);
        for (int64_t v0 = 0; v0 < nv; v0 += vper) {
          const int V = int(std::min(vper, nv - v0));
          float* o = out + r0 * ldo + v0 * VL;
          const float* g = gy + p0 * OC + r0;
          pw_gw_fn(V, r)(x + p0 * C + v0 * VL, C, g, OC, nin, o, ldo);
          if (nin < n) pw_gw_fn(V, r)(xlast.data() + v0 * VL, C, g + nin * OC, OC, 1, o, ldo);
        }
      }
    }
  });
  // the chunks summed in order, rows of grad_w in parallel
  parallel_for(OC, 1, [&](int64_t rb, int64_t re) {
    std::vector<float> row(ldo);
    for (int64_t r = rb; r < re; ++r) {
      for (int64_t j = 0; j < ldo; j += VL) {
        vf acc{};
        for (int64_t ch = 0; ch < chunks; ++ch) acc += loadu(part.data() + ch * psz + r * ldo + j);
        storeu(row.data() + j, acc);
      }
      std::copy(row.begin(), row.begin() + C, gw + r * C);
    }
  });
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
