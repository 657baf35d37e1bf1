// bindings/packed.h: y (M, n) = x (M, K) @ W + bias with W float32 in 64-column panels
// (ceil(n / 64), K, 64): the streaming GEMV up to kGemvMaxRows rows (decode), sgemm reading the
// panels in place past them (prefill). The one dispatch of _C.linear_f32_packed and of
// _C.DecoderLayerPlan's products, so both give the same bits. Call without the GIL.
// linear_q8_panels below: the same for the int8 panels.
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

// The same for int8 weights in panels (ceil(n / 64), K, 64) with float16 block scales (ceil(n /
// 64), K / 32, 64): W8A8 (x quantized per row and block at the product) or weight-only. The
// one call of _C.linear_w8a8_packed / linear_q8_packed and of the plans' int8 products.
inline void linear_q8_panels(const float* x, int64_t ldx, int64_t M, int64_t K, const int8_t* q, const uint16_t* s,
                             int64_t n, const float* bias, float* y, bool w8a8) {
  GemvPackedArgs g;
  g.M = M;
  g.K = K;
  g.N = n;
  g.x = x;
  g.ldx = ldx;
  g.q = q;
  g.s = s;
  g.bias = bias;
  g.y = y;
  g.ldy = n;
  if (w8a8)
    gemv_kernels().gemm_w8a8_packed(g);
  else
    gemv_kernels().gemm_q8_packed(g);
}

}  // namespace pyaiml
