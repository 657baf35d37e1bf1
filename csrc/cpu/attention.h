// attention.h: scaled dot-product attention on CPU, forward and backward, float32.
// out = softmax(scale * q k^T + mask) v, computed flash-style: key tiles streamed through an
// online softmax (no Lq x Lk matrix), log-sum-exp saved per query row; the backward
// recomputes the probabilities tile by tile (D_i = rowsum(dO * O), dS = P * (dP - D)).
//
// Layout seen here (pyaiml/ops/attention.py prepares it): q (N, Hq, Lq, D), k (N, Hk, Lk, D),
// v (N, Hk, Lk, Dv), C-contiguous; Hq = G * Hk (grouped-query attention, q head h reads kv
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

}  // namespace pyaiml
