// isa.h: run-time instruction-set selection. Every file in csrc/cpu/ is compiled once per
// ISA inside namespace pyaiml::<isa>; a family's kernel table is picked here at first use
// from the best ISA the CPU supports, or from PYAIML_ISA=baseline|avx2|avx512.
//
// Testing hook: PYAIML_HIDE_ISA=avx512 (or avx2, or avx2,avx512) makes the selection treat
// those ISAs, and every ISA above the lowest one named, as unsupported by this CPU, so the
// AVX2 and baseline paths (and the error for a PYAIML_ISA the CPU lacks) can be tested on
// an AVX-512 machine. Nothing else reads it.
#pragma once
#include <string>

namespace pyaiml {

enum class Isa : int { baseline = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
bool cpu_supports(Isa isa);   // the CPU and OS can run code built for this ISA (and it is not hidden)
bool isa_compiled(Isa isa);   // this build carries code for this ISA
Isa best_isa();               // best compiled and supported
Isa active_isa();             // PYAIML_ISA if set (validated), else best_isa(); fixed at first call
void validate_isa_env();      // throws std::invalid_argument on a bad PYAIML_ISA or PYAIML_HIDE_ISA
// AVX-512 VNNI (int8 dot products, vpdpbusd) on top of the avx512 ISA. Testing hook:
// PYAIML_HIDE_VNNI=1 reports it absent, so the int8 kernels' other path runs on such a CPU.
bool cpu_has_avx512_vnni();

}  // namespace pyaiml

// Declares a kernel table `Table` with one getter per compiled ISA and an inline selector
// `pyaiml::getter()` returning the active ISA's table.
#if PYAIML_HAVE_X86
#define PYAIML_KERNEL_TABLE(Table, getter)                                   \
  namespace baseline { const Table& getter(); }                            \
  namespace avx2 { const Table& getter(); }                                \
  namespace avx512 { const Table& getter(); }                              \
  inline const Table& getter() {                                           \
    static const Table* t = [] {                                           \
      switch (::pyaiml::active_isa()) {                                    \
        case ::pyaiml::Isa::avx512: return &avx512::getter();              \
        case ::pyaiml::Isa::avx2: return &avx2::getter();                  \
        default: return &baseline::getter();                               \
      }                                                                    \
    }();                                                                   \
    return *t;                                                             \
  }
#else
#define PYAIML_KERNEL_TABLE(Table, getter)                                   \
  namespace baseline { const Table& getter(); }                            \
  inline const Table& getter() { return baseline::getter(); }
#endif
