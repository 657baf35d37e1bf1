// bindings/packed.h: y (M, n) = x (M, K) @ W + bias with W float32 in 64-column panels
// (ceil(n / 64), K, 64): the streaming GEMV up to kGemvMaxRows rows (decode), sgemm reading the
// panels in place past them (prefill). The one dispatch of _C.linear_f32_packed and of
// _C.DecoderLayerPlan's products, so both give the same bits. Call without the GIL.
#pragma once
#include <cstdint>

#include "cpu/gemm.h"
#include "cpu/gemv.h"

namespace pyaiml {

inline void linear_packed(const float* x, int64_t ldx, int64_t M, int64_t K, const float* wp, int64_t n,
                          const float* bias, float* y) {
  if (M <= kGemvMaxRows) {
    GemvF32PackedArgs g;
    g.M = M;
    g.K = K;
    g.N = n;
    g.x = x;
    g.ldx = ldx;
    g.w = wp;
    g.bias = bias;
    g.y = y;
    g.ldy = n;
    gemv_kernels().gemv_f32_packed(g);
    return;
  }
  GemmArgs g;
  g.M = M;
  g.N = n;
  g.K = K;
  g.A = x;
  g.rsa = ldx;
  g.csa = 1;
  g.B = wp;
  g.rsb = kPanel;
  g.csb = 1;
  g.bps = K * kPanel;
  g.C = y;
  g.ldc = n;
  g.bias_n = bias;
  gemm_kernels().sgemm(g);
}

}  // namespace pyaiml
