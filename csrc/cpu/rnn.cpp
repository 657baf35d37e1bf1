// rnn.cpp: the fused LSTM and GRU sequence kernels (see rnn.h). Compiled once per ISA.
//
// Per step and row block: the recurrent GEMM h_{t-1} U as one sgemm_st call per column panel
// of a packed copy of U (W = 2 NR columns per panel, rows W floats apart: the GEMM reads the
// panel and h in place, so each step packs nothing), then one pointwise pass for the gates
// and one for the cell. The batch is split into contiguous row blocks over the pool once for
// the whole sequence (rows do not interact), so no step waits for another thread.
// Measured on a 2-core Zen 4 VM (AVX-512), LSTM forward, batch 32, 64 steps, 128 units, 2
// threads, machine load 2.2: batch split 2.25 ms median (1 thread: 4.0 ms) against 2.65 ms
// for the alternative, the GEMM's column panels split per step and then the rows, two
// pool barriers per step; under heavier load the barriers cost more (5.2-5.7 ms against
// 8.5-8.6 ms median). The batch split wins at the sizes measured.
//
// The transcendental functions (exp, sigmoid, tanh) are csrc/cpu/vmath.h's (relative error
// of each a few float32 ulps; tests/test_rnn_kernel.py checks them against float64).
// Tests: tests/test_rnn_kernel.py.
#include "cpu/rnn.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "common/parallel.h"
#include "common/simd.h"
#include "cpu/gemm.h"
#include "cpu/vmath.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

// Loads and stores of the first `n` (< VL) lanes, for the tail of a row.
inline vf load_n(const float* p, int64_t n) {
  alignas(64) float b[VL] = {};
  std::memcpy(b, p, sizeof(float) * n);
  return loadu(b);
}
inline void store_n(float* p, vf v, int64_t n) {
  alignas(64) float b[VL];
  storeu(b, v);
  std::memcpy(p, b, sizeof(float) * n);
}

// f(j, ld, st) over [0, n) in vectors, the tail through load_n/store_n.
template <class F>
inline void vloop(int64_t n, F&& f) {
  int64_t j = 0;
  for (; j + VL <= n; j += VL)
    f(j, [](const float* p) { return loadu(p); }, [](float* p, vf v) { storeu(p, v); });
  if (j < n) {
    const int64_t m = n - j;
    f(j, [m](const float* p) { return load_n(p, m); }, [m](float* p, vf v) { store_n(p, v, m); });
  }
}

// ---------------------------------------------------------------- packing
// out (ceil(N / W) panels, K, W): panel p holds columns p W .. p W + W - 1 of the K x N
// matrix M(k, j) = src[k * rs + j * cs], zero-padded past N.
std::vector<float> pack_panels(const float* src, int64_t K, int64_t N, int64_t rs, int64_t cs, int64_t W) {
  const int64_t P = (N + W - 1) / W;
  std::vector<float> out(static_cast<size_t>(P * K * W), 0.f);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t k = 0; k < K; ++k) {
      float* d = out.data() + (p * K + k) * W;
      const int64_t w = std::min<int64_t>(W, N - p * W);
      for (int64_t j = 0; j < w; ++j) d[j] = src[k * rs + (p * W + j) * cs];
    }
  return out;
}

// C(R, P W) = A(R, K) * panels, A(r, k) = A[r * rsa + k].
inline void panel_gemm(int64_t R, int64_t K, const float* A, int64_t rsa, const float* panels, int64_t P, int64_t W,
                       float* C, int64_t ldc) {
  for (int64_t p = 0; p < P; ++p) {
    GemmArgs g;
    g.M = R;
    g.N = W;
    g.K = K;
    g.A = A;
    g.rsa = rsa;
    g.csa = 1;
    g.B = panels + p * K * W;
    g.rsb = W;
    g.csb = 1;
    g.C = C + p * W;
    g.ldc = ldc;
    sgemm_st(g);
  }
}

int64_t panel_width() { return 2 * gemm_kernels().nr; }

// dU (H, G) = hprev^T dz over the N = B T rows of hprev (N, H) and dz (N, G), and db (G,) =
// the column sums of dz when db is not null (hprev: any N x H left operand). One GEMM, K = N, its columns split over the pool
// so that each thread packs only its part of dz (the large operand) and all of hprev;
// sgemm would split the H rows and pack all of dz in every thread.
void grad_recurrent(const float* hprev, const float* dz, int64_t N, int64_t H, int64_t G, float* dU, float* db) {
  parallel_for_static(G, panel_width(), [&](int64_t j0, int64_t j1) {
    GemmArgs g;
    g.M = H;
    g.N = j1 - j0;
    g.K = N;
    g.A = hprev;
    g.rsa = 1;
    g.csa = H;
    g.B = dz + j0;
    g.rsb = G;
    g.csb = 1;
    g.C = dU + j0;
    g.ldc = G;
    sgemm_st(g);
    if (db) {
      std::fill(db + j0, db + j1, 0.f);
      for (int64_t n = 0; n < N; ++n) {
        const float* row = dz + n * G;
        vloop(j1 - j0, [&](int64_t j, auto ld, auto st) { st(db + j0 + j, ld(db + j0 + j) + ld(row + j0 + j)); });
      }
    }
  });
}

// hprev (B T, H): row (b, t) = h_{t-1} of sequence b (h0 for t = 0), for rows b0 .. b1.
void fill_hprev(float* hprev, const float* h0, const float* hs, int64_t b0, int64_t b1, int64_t T, int64_t H) {
  for (int64_t b = b0; b < b1; ++b) {
    float* d = hprev + b * T * H;
    std::memcpy(d, h0 + b * H, sizeof(float) * H);
    if (T > 1) std::memcpy(d + H, hs + b * T * H, sizeof(float) * (T - 1) * H);
  }
}

// ---------------------------------------------------------------- forward
void lstm_forward(const LstmArgs& a) {
  const int64_t B = a.B, T = a.T, H = a.H, G = 4 * H;
  if (B <= 0 || T <= 0 || H <= 0) return;
  const int64_t W = panel_width();
  const int64_t P = (G + W - 1) / W, Gp = P * W;
  const std::vector<float> Up = pack_panels(a.U, H, G, G, 1, W);
  parallel_for_static(B, 1, [&](int64_t b0, int64_t b1) {
    const int64_t R = b1 - b0;
    // z (R, Gp): the step's GEMM result; hb (R, H): h_{t-1} of the block's rows, the GEMM's
    // A. Rows of hs itself lie T H floats apart, a multiple of 4 KiB for T H = 8192, so the
    // GEMM's 14 rows would all fall in one 8-way L1 set; the compact copy avoids that.
    std::vector<float> buf(static_cast<size_t>(R * (Gp + H)));
    float* z = buf.data();
    float* hb = z + R * Gp;
    std::memcpy(hb, a.h0 + b0 * H, sizeof(float) * R * H);
    for (int64_t b = b0; b < b1; ++b) std::memcpy(a.cs + b * (T + 1) * H, a.c0 + b * H, sizeof(float) * H);
    for (int64_t t = 0; t < T; ++t) {
      panel_gemm(R, H, hb, H, Up.data(), P, W, z, Gp);
      for (int64_t r = 0; r < R; ++r) {
        const int64_t b = b0 + r, bt = b * T + t;
        const float* zr = z + r * Gp;
        const float* x = a.xp + bt * G;
        float* g = a.gates + bt * G;
        vloop(2 * H, [&](int64_t j, auto ld, auto st) { st(g + j, vsigmoid(ld(zr + j) + ld(x + j))); });
        vloop(H, [&](int64_t j, auto ld, auto st) {
          st(g + 2 * H + j, vtanh(ld(zr + 2 * H + j) + ld(x + 2 * H + j)));
        });
        vloop(H, [&](int64_t j, auto ld, auto st) {
          st(g + 3 * H + j, vsigmoid(ld(zr + 3 * H + j) + ld(x + 3 * H + j)));
        });
        const bool real = a.mask == nullptr || a.mask[bt] != 0;
        const float* cp = a.cs + (b * (T + 1) + t) * H;
        float* cn = a.cs + (b * (T + 1) + t + 1) * H;
        float* tcp = a.tc + bt * H;
        float* h = a.hs + bt * H;
        float* hr = hb + r * H;  // h_{t-1} in, h_t out
        vloop(H, [&](int64_t j, auto ld, auto st) {
          const vf c = ld(g + H + j) * ld(cp + j) + ld(g + j) * ld(g + 2 * H + j);
          const vf tcv = vtanh(c);
          st(tcp + j, tcv);
          if (real) {
            const vf hv = ld(g + 3 * H + j) * tcv;
            st(cn + j, c);
            st(h + j, hv);
            st(hr + j, hv);
          }
        });
        if (!real) {  // a padded step carries both states exactly
          std::memcpy(cn, cp, sizeof(float) * H);
          std::memcpy(h, hr, sizeof(float) * H);
        }
      }
    }
  });
}

// ---------------------------------------------------------------- backward
void lstm_backward(const LstmArgs& a) {
  const int64_t B = a.B, T = a.T, H = a.H, G = 4 * H;
  if (B <= 0 || T <= 0 || H <= 0) return;
  const int64_t W = panel_width();
  const int64_t Q = (H + W - 1) / W, Hp = Q * W;
  // B(k, j) = U^T(k, j) = U[j * G + k]: panels of U^T's columns (the units)
  const std::vector<float> Vp = pack_panels(a.U, G, H, 1, G, W);
  // dx = dxp W^T through panels of W^T, as the per-step products (no packing in the GEMM:
  // 2048 x 512 x 128 took 2.5-2.8 ms this way against 3.5 ms through sgemm, which packs
  // dxp when N > 2 NR)
  const int64_t Qd = a.dx ? (a.D + W - 1) / W : 0, Dp = Qd * W;
  const std::vector<float> Wp = a.dx ? pack_panels(a.Wk, G, a.D, 1, G, W) : std::vector<float>();
  // The weight gradients are one GEMM over all B T rows, Z^T dz, with Z's rows
  // [x_t (D, when dW is wanted), h_{t-1} (H, when dU is), 1 (when dW is: the bias's gradient
  // as one more row of the product, nearly free: 257 rows fill as many 14-row tiles as 256)].
  // One GEMM rather than one per weight: dz (B T x 4H, the large operand) is packed once.
  const int64_t D = a.dW ? a.D : 0;
  const int64_t Kz = D + (a.dU ? H : 0) + (a.dW ? 1 : 0);
  // every element of Z is written below: no zero fill (2 MB at the benchmark's size)
  std::unique_ptr<float[]> Z(new float[static_cast<size_t>(B * T * Kz)]);
  parallel_for_static(B, 1, [&](int64_t b0, int64_t b1) {
    const int64_t R = b1 - b0;
    std::vector<float> buf(static_cast<size_t>(R * (2 * H + Hp + G)));
    float* dh = buf.data();          // (R, H) gradient of h_t, then of h_{t-1}
    float* dc = dh + R * H;          // (R, H) gradient of c_t
    float* dhn = dc + R * H;         // (R, Hp) the GEMM's dz_t U^T
    float* dzb = dhn + R * Hp;       // (R, G) dz_t, the GEMM's A (compact, as hb in the forward)
    std::memset(dh, 0, sizeof(float) * R * H);
    if (a.dcT)
      std::memcpy(dc, a.dcT + b0 * H, sizeof(float) * R * H);
    else
      std::memset(dc, 0, sizeof(float) * R * H);
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t r = 0; r < R; ++r) {
        const int64_t b = b0 + r, bt = b * T + t;
        float* dhr = dh + r * H;
        float* dcr = dc + r * H;
        if (a.dhs) {
          const float* gh = a.dhs + bt * H;
          vloop(H, [&](int64_t j, auto ld, auto st) { st(dhr + j, ld(dhr + j) + ld(gh + j)); });
        }
        float* dz = dzb + r * G;
        if (a.mask && a.mask[bt] == 0) {  // padded: no gate gradient, both states carried
          std::memset(dz, 0, sizeof(float) * G);
          std::memset(a.dxp + bt * G, 0, sizeof(float) * G);
          continue;
        }
        const float* g = a.gates + bt * G;
        const float* tcp = a.tc + bt * H;
        const float* cp = a.cs + (b * (T + 1) + t) * H;
        vloop(H, [&](int64_t j, auto ld, auto st) {
          const vf i = ld(g + j), f = ld(g + H + j), gg = ld(g + 2 * H + j), o = ld(g + 3 * H + j);
          const vf tcv = ld(tcp + j), dhv = ld(dhr + j);
          const vf dct = ld(dcr + j) + dhv * o * (1.f - tcv * tcv);
          st(dz + j, dct * gg * i * (1.f - i));
          st(dz + H + j, dct * ld(cp + j) * f * (1.f - f));
          st(dz + 2 * H + j, dct * i * (1.f - gg * gg));
          st(dz + 3 * H + j, dhv * tcv * o * (1.f - o));
          st(dcr + j, dct * f);
        });
        std::memcpy(a.dxp + bt * G, dz, sizeof(float) * G);
      }
      panel_gemm(R, G, dzb, G, Vp.data(), Q, W, dhn, Hp);
      for (int64_t r = 0; r < R; ++r)
        if (!(a.mask && a.mask[(b0 + r) * T + t] == 0))
          std::memcpy(dh + r * H, dhn + r * Hp, sizeof(float) * H);
    }
    std::memcpy(a.dh0 + b0 * H, dh, sizeof(float) * R * H);
    std::memcpy(a.dc0 + b0 * H, dc, sizeof(float) * R * H);
    if (a.dx) {  // this block's rows of dxp are final
      const int64_t n0 = b0 * T, RT = R * T, Dx = a.D;
      if (Dp == Dx) {
        panel_gemm(RT, G, a.dxp + n0 * G, G, Wp.data(), Qd, W, a.dx + n0 * Dx, Dx);
      } else {
        std::vector<float> tmp(static_cast<size_t>(RT * Dp));
        panel_gemm(RT, G, a.dxp + n0 * G, G, Wp.data(), Qd, W, tmp.data(), Dp);
        for (int64_t n = 0; n < RT; ++n) std::memcpy(a.dx + (n0 + n) * Dx, tmp.data() + n * Dp, sizeof(float) * Dx);
      }
    }
    for (int64_t b = b0; b < b1 && Kz > 0; ++b)
      for (int64_t t = 0; t < T; ++t) {
        float* z = Z.get() + (b * T + t) * Kz;
        if (a.dW) {
          std::memcpy(z, a.x + (b * T + t) * D, sizeof(float) * D);
          z[Kz - 1] = 1.f;
        }
        if (a.dU) std::memcpy(z + D, t == 0 ? a.h0 + b * H : a.hs + (b * T + t - 1) * H, sizeof(float) * H);
      }
  });
  if (Kz == 0) return;
  if (!a.dW) {
    grad_recurrent(Z.get(), a.dxp, B * T, Kz, G, a.dU, nullptr);
    return;
  }
  std::vector<float> C(static_cast<size_t>(Kz * G));
  grad_recurrent(Z.get(), a.dxp, B * T, Kz, G, C.data(), nullptr);
  std::memcpy(a.dW, C.data(), sizeof(float) * D * G);
  if (a.dU) std::memcpy(a.dU, C.data() + D * G, sizeof(float) * H * G);
  std::memcpy(a.db, C.data() + (Kz - 1) * G, sizeof(float) * G);
}


// ---------------------------------------------------------------- GRU (reset_after)
void gru_forward(const GruArgs& a) {
  const int64_t B = a.B, T = a.T, H = a.H, G = 3 * H;
  if (B <= 0 || T <= 0 || H <= 0) return;
  const int64_t W = panel_width();
  const int64_t P = (G + W - 1) / W, Gp = P * W;
  const std::vector<float> Up = pack_panels(a.U, H, G, G, 1, W);
  std::vector<float> zero_b;
  const float* br = a.brec;
  if (!br) {
    zero_b.assign(static_cast<size_t>(G), 0.f);
    br = zero_b.data();
  }
  parallel_for_static(B, 1, [&](int64_t b0, int64_t b1) {
    const int64_t R = b1 - b0;
    std::vector<float> buf(static_cast<size_t>(R * (Gp + H)));
    float* z = buf.data();        // (R, Gp) h_{t-1} U
    float* hb = z + R * Gp;       // (R, H) h_{t-1}, compact (see lstm_forward)
    std::memcpy(hb, a.h0 + b0 * H, sizeof(float) * R * H);
    for (int64_t t = 0; t < T; ++t) {
      panel_gemm(R, H, hb, H, Up.data(), P, W, z, Gp);
      for (int64_t r = 0; r < R; ++r) {
        const int64_t b = b0 + r, bt = b * T + t;
        const float* zr = z + r * Gp;
        const float* x = a.xp + bt * G;
        float* g = a.gates + bt * G;
        float* hnp = a.hn + bt * H;
        vloop(2 * H, [&](int64_t j, auto ld, auto st) { st(g + j, vsigmoid(ld(x + j) + ld(zr + j) + ld(br + j))); });
        vloop(H, [&](int64_t j, auto ld, auto st) {
          const vf hn = ld(zr + 2 * H + j) + ld(br + 2 * H + j);
          st(hnp + j, hn);
          st(g + 2 * H + j, vtanh(ld(x + 2 * H + j) + ld(g + H + j) * hn));
        });
        float* h = a.hs + bt * H;
        float* hr = hb + r * H;
        if (a.mask && a.mask[bt] == 0) {
          std::memcpy(h, hr, sizeof(float) * H);
          continue;
        }
        vloop(H, [&](int64_t j, auto ld, auto st) {
          const vf n = ld(g + 2 * H + j);
          const vf hv = n + ld(g + j) * (ld(hr + j) - n);
          st(h + j, hv);
          st(hr + j, hv);
        });
      }
    }
  });
}

void gru_backward(const GruArgs& a) {
  const int64_t B = a.B, T = a.T, H = a.H, G = 3 * H;
  if (B <= 0 || T <= 0 || H <= 0) return;
  const int64_t W = panel_width();
  const int64_t Q = (H + W - 1) / W, Hp = Q * W;
  const std::vector<float> Vp = pack_panels(a.U, G, H, 1, G, W);
  const bool need_da = a.dU || a.dbrec;  // the gradient of a_t for every step, kept for dU / db
  std::vector<float> hprev, da;
  if (a.dU) hprev.resize(static_cast<size_t>(B * T * H));
  if (need_da) da.resize(static_cast<size_t>(B * T * G));
  parallel_for_static(B, 1, [&](int64_t b0, int64_t b1) {
    const int64_t R = b1 - b0;
    std::vector<float> buf(static_cast<size_t>(R * (H + Hp + G)));
    float* dh = buf.data();      // (R, H) gradient of h_t; then its part through z, dh z
    float* dhn = dh + R * H;     // (R, Hp) da_t U^T
    float* dab = dhn + R * Hp;   // (R, G) da_t, the GEMM's A
    std::memset(dh, 0, sizeof(float) * R * H);
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t r = 0; r < R; ++r) {
        const int64_t b = b0 + r, bt = b * T + t;
        float* dhr = dh + r * H;
        if (a.dhs) {
          const float* gh = a.dhs + bt * H;
          vloop(H, [&](int64_t j, auto ld, auto st) { st(dhr + j, ld(dhr + j) + ld(gh + j)); });
        }
        float* dar = dab + r * G;
        float* dx = a.dxp + bt * G;
        if (a.mask && a.mask[bt] == 0) {
          std::memset(dar, 0, sizeof(float) * G);
          std::memset(dx, 0, sizeof(float) * G);
          if (need_da) std::memset(da.data() + bt * G, 0, sizeof(float) * G);
          continue;
        }
        const float* g = a.gates + bt * G;
        const float* hnp = a.hn + bt * H;
        const float* hp = t == 0 ? a.h0 + b * H : a.hs + (bt - 1) * H;
        vloop(H, [&](int64_t j, auto ld, auto st) {
          const vf zg = ld(g + j), rg = ld(g + H + j), n = ld(g + 2 * H + j), hn = ld(hnp + j);
          const vf dhv = ld(dhr + j);
          const vf dn = dhv * (1.f - zg) * (1.f - n * n);
          const vf dz = dhv * (ld(hp + j) - n) * zg * (1.f - zg);
          const vf dr = dn * hn * rg * (1.f - rg);
          st(dx + j, dz);
          st(dx + H + j, dr);
          st(dx + 2 * H + j, dn);
          st(dar + j, dz);
          st(dar + H + j, dr);
          st(dar + 2 * H + j, dn * rg);
          st(dhr + j, dhv * zg);
        });
        if (need_da) std::memcpy(da.data() + bt * G, dar, sizeof(float) * G);
      }
      panel_gemm(R, G, dab, G, Vp.data(), Q, W, dhn, Hp);
      for (int64_t r = 0; r < R; ++r) {
        if (a.mask && a.mask[(b0 + r) * T + t] == 0) continue;
        float* dhr = dh + r * H;
        const float* gr = dhn + r * Hp;
        vloop(H, [&](int64_t j, auto ld, auto st) { st(dhr + j, ld(dhr + j) + ld(gr + j)); });
      }
    }
    std::memcpy(a.dh0 + b0 * H, dh, sizeof(float) * R * H);
    if (a.dU) fill_hprev(hprev.data(), a.h0, a.hs, b0, b1, T, H);
  });
  if (a.dU) {
    grad_recurrent(hprev.data(), da.data(), B * T, H, G, a.dU, a.dbrec);
  } else if (a.dbrec) {
    std::fill(a.dbrec, a.dbrec + G, 0.f);
    for (int64_t n = 0; n < B * T; ++n)
      for (int64_t j = 0; j < G; ++j) a.dbrec[j] += da[n * G + j];
  }
}

}  // namespace

const RnnKernels& rnn_kernels() {
  static const RnnKernels k{&lstm_forward, &lstm_backward, &gru_forward, &gru_backward};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
