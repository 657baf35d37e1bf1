// scratch.h: a growable float buffer aligned to `Align` bytes, for per-thread scratch
// (`thread_local ScratchFloats<64> tl_x;`): reused across calls, since a fresh allocation past
// the mmap threshold page-faults on first touch. get(n) returns room for at least n floats;
// earlier contents are not kept when it grows. Include only from csrc/cpu/ files (compiled with
// PYAIML_ISA_NS defined, so each ISA build has its own copy).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>

namespace pyaiml {
namespace PYAIML_ISA_NS {

template <size_t Align>
struct ScratchFloats {
  float* p = nullptr;
  size_t n = 0;
  ScratchFloats() = default;
  ScratchFloats(const ScratchFloats&) = delete;
  ScratchFloats& operator=(const ScratchFloats&) = delete;
  ~ScratchFloats() { std::free(p); }
  float* get(size_t want) {
    if (want > n) {
      std::free(p);
      p = nullptr;
      n = 0;
      const size_t bytes = ((want * sizeof(float) + Align - 1) / Align) * Align;
      p = static_cast<float*>(std::aligned_alloc(Align, bytes));
      if (!p) throw std::bad_alloc();
      n = bytes / sizeof(float);
    }
    return p;
  }
};

}  // namespace PYAIML_ISA_NS
}  // namespace pyaiml
