// finite.h: the scan behind pyaiml.ops' input checks (`_C.all_finite`): true when no entry of
// a contiguous float32 / float64 buffer is NaN or +-inf. The exponent bits are tested, so the
// answer does not depend on the compiler's floating-point flags. Vectorised per ISA and split
// over the pool for large buffers (an op's check of a 38 MB activation had cost a quarter of
// the convolution behind it on one scalar thread).
// Tests: tests/test_validate.py (every position of a bad value, every tail length, both dtypes).
#pragma once
#include <cstdint>

#include "common/isa.h"

namespace pyaiml {

struct FiniteKernels {
  bool (*f32)(const float* p, int64_t n);
  bool (*f64)(const double* p, int64_t n);
};

PYAIML_KERNEL_TABLE(FiniteKernels, finite_kernels)

}  // namespace pyaiml
