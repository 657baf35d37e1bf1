// attention.h: scaled dot-product attention on CPU, forward and backward, float32.
// out = softmax(scale * q k^T + mask) v, computed flash-style: key tiles streamed through an
// online softmax (no Lq x Lk matrix), log-sum-exp saved per query row; the backward
// recomputes the probabilities tile by tile (D_i = rowsum(dO * O), dS = P * (dP - D)).
//
// Layout seen here (pyaiml/ops/attention.py prepares it): q (N, Hq, Lq, D), k (N, Hk, Lk, D),
// v (N, Hk, Lk, Dv), C-contiguous (k and v: rows contiguous, see k_head_stride); Hq = G * Hk (grouped-query attention, q head h reads kv
// head h / G). The mask is a 4-D view (N, Hq, Lq, Lk) with any element strides (0 for
// broadcast): bool (True = attend) or additive float. Causal masking is top-left aligned
// (key j visible to query i iff j <= i) and combines with a mask (both must allow).
// A row with no visible key gives out = 0, lse = +inf and zero gradients.
//
// Not here: dropout, float64, argument validation (bindings/attention.cpp does it).
// The fast kernels are exact for finite inputs and report any non-finite result; the _naive
// kernels skip masked pairs explicitly, so NaN/inf in masked positions never reach the
// result; the binding reruns a flagged call with them. Tests: tests/test_attention*.py.
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

struct AttnArgs {
  int64_t N = 0, Hq = 0, Hk = 0, Lq = 0, Lk = 0, D = 0, Dv = 0;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  // Elements between the starts of consecutive (n, kv head) blocks of k / v, whose Lk rows are
  // contiguous; 0: Lk * D / Lk * Dv (the arrays are C-contiguous). A KV cache (N, Hk, Tmax, D)
  // read up to Lk <= Tmax is passed in place with Tmax * D.
  int64_t k_head_stride = 0, v_head_stride = 0;
  int mask_kind = 0;               // 0 none, 1 bool (uint8, nonzero = attend), 2 additive float
  const void* mask = nullptr;
  int64_t ms[4] = {0, 0, 0, 0};    // mask element strides over (N, Hq, Lq, Lk)
  bool causal = false;
  float scale = 1.f;
  // forward outputs / backward inputs
  float* out = nullptr;            // (N, Hq, Lq, Dv)
  float* lse = nullptr;            // (N, Hq, Lq)
  // backward
  const float* dout = nullptr;     // (N, Hq, Lq, Dv)
  float* dq = nullptr;             // (N, Hq, Lq, D)
  float* dk = nullptr;             // (N, Hk, Lk, D)
  float* dv = nullptr;             // (N, Hk, Lk, Dv)
};

struct AttentionKernels {
  // The fast kernels return false when a result is NaN/inf: then the inputs held non-finite
  // values (or scores overflowed) and the caller reruns the _naive kernel, which decides.
  bool (*forward)(const AttnArgs&);         // writes out, lse
  bool (*backward)(const AttnArgs&);        // reads out, lse, dout; writes dq, dk, dv
  void (*forward_naive)(const AttnArgs&);   // writes out, lse; NaN-safe in masked positions
  void (*backward_naive)(const AttnArgs&);  // reads dout; writes dq, dk, dv (out/lse unused)
};

PYAIML_KERNEL_TABLE(AttentionKernels, attention_kernels)

// Key / value rows of kv block nh = n * Hk + hk.
inline const float* attn_k(const AttnArgs& a, int64_t nh) {
  return a.k + nh * (a.k_head_stride ? a.k_head_stride : a.Lk * a.D);
}
inline const float* attn_v(const AttnArgs& a, int64_t nh) {
  return a.v + nh * (a.v_head_stride ? a.v_head_stride : a.Lk * a.Dv);
}

}  // namespace pyaiml
