// finite.cpp: the NaN/inf scan of finite.h, per ISA.
#include "cpu/finite.h"

#include <atomic>

#include "common/parallel.h"
#include "common/simd.h"

namespace pyaiml {
namespace PYAIML_ISA_NS {

namespace {

// Elements per task: large enough that a task outlasts the pool's hand-off, small enough
// that two threads share a few-MB buffer.
constexpr int64_t GRAIN_BYTES = 1 << 18;

// U: the unsigned integer of the element's width; E: its exponent field. A value is NaN or
// inf exactly when every exponent bit is set.
template <class U, U E>
bool finite_range(const U* p, int64_t n) {
  constexpr int W = VL * 4 / int(sizeof(U));  // elements per vector
  typedef U vu __attribute__((vector_size(VL * 4)));
  typedef U vu_u __attribute__((vector_size(VL * 4), aligned(1)));
  const vu e = vu{} + E;
  vu bad0{}, bad1{};
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const vu a = *reinterpret_cast<const vu_u*>(p + i);
    const vu b = *reinterpret_cast<const vu_u*>(p + i + W);
    bad0 |= (vu)((a & e) == e);
    bad1 |= (vu)((b & e) == e);
  }
  bad0 |= bad1;
  U bad = 0;
  for (int j = 0; j < W; ++j) bad |= bad0[j];
  for (; i < n; ++i) bad |= U((p[i] & E) == E);
  return bad == 0;
}

template <class U, U E>
bool finite_all(const void* data, int64_t n) {
  const U* p = static_cast<const U*>(data);
  const int64_t grain = GRAIN_BYTES / int64_t(sizeof(U));
  if (n <= 2 * grain) return finite_range<U, E>(p, n);
  std::atomic<bool> ok{true};
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    if (ok.load(std::memory_order_relaxed) && !finite_range<U, E>(p + b, e - b))
      ok.store(false, std::memory_order_relaxed);
  });
  return ok.load();
}

bool f32(const float* p, int64_t n) { return finite_all<uint32_t, 0x7f800000u>(p, n); }
bool f64(const double* p, int64_t n) { return finite_all<uint64_t, 0x7ff0000000000000ull>(p, n); }

}  // namespace

const FiniteKernels& finite_kernels() {
  static const FiniteKernels k{&f32, &f64};
  return k;
}

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
