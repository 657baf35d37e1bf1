// pool.h: the per-ISA kernel table of max pooling (csrc/cpu/pool.cpp): forward with
// optional flat int64 indices or one-byte window positions, an optional fused ReLU, and a
// backward from either kind of index (or from x, recomputing the argmax).
//
// Window positions ("win"): uint8 kh * KW + kw of the maximum, counted from the window's
// origin in the padded input (so KH * KW <= 254); kPoolNoGrad marks a window whose output
// passes no gradient (the fused ReLU clamped it: its maximum was not > 0).
// The shape struct (PoolShape) lives in conv.h with the conv family's shapes.
// Not here: validation (bindings/conv.cpp). Tests: tests/test_pool.py.
#pragma once
#include <cstdint>

#include "common/isa.h"
#include "cpu/conv.h"

namespace pyaiml {

constexpr uint8_t kPoolNoGrad = 255;
constexpr int64_t kPoolMaxWindow = 254;  // largest KH * KW that window positions can encode

struct PoolKernels {
  // y = max over each window (relu: max(y, 0)); idx / win may be null, and at most one is
  // given (idx wins). Returns whether every y is finite.
  bool (*forward)(const PoolShape&, const float* x, float* y, int64_t* idx, uint8_t* win, bool relu);
  // gx (overwritten) from gy and idx, or win, or (both null) the argmax recomputed from x.
  // Returns false when an index is invalid (outside [0, H*W), or a window position that is
  // not in its window); such entries are skipped, never written through.
  bool (*backward)(const PoolShape&, const float* gy, const float* x, const int64_t* idx, const uint8_t* win,
                   float* gx);
};

PYAIML_KERNEL_TABLE(PoolKernels, pool_kernels)

}  // namespace pyaiml
