// isa.cpp: CPU feature detection (cpuid + xgetbv), the PYAIML_ISA override and the
// PYAIML_HIDE_ISA testing hook (isa.h).
#include "common/isa.h"

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if PYAIML_HAVE_X86
#include <cpuid.h>
#endif

namespace pyaiml {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "baseline";
  }
}

bool isa_compiled(Isa isa) {
#if PYAIML_HAVE_X86
  (void)isa;
  return true;
#else
  return isa == Isa::baseline;
#endif
}

#if PYAIML_HAVE_X86
static unsigned long long xgetbv0() {
  unsigned int eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((unsigned long long)edx << 32) | eax;
}
#endif

static bool parse_isa(const char* s, size_t n, Isa* out) {
  for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512})
    if (std::strlen(isa_name(isa)) == n && std::strncmp(s, isa_name(isa), n) == 0) {
      *out = isa;
      return true;
    }
  return false;
}

// The lowest ISA named in PYAIML_HIDE_ISA (comma-separated avx2 / avx512), or
// Isa::baseline when it is unset; *ok = false when a name is not one of those two.
static Isa lowest_hidden(bool* ok) {
  *ok = true;
  const char* env = std::getenv("PYAIML_HIDE_ISA");
  Isa low = Isa::baseline;
  if (!env || !*env) return low;
  for (const char* p = env;;) {
    const char* e = std::strchr(p, ',');
    const size_t n = e ? size_t(e - p) : std::strlen(p);
    Isa isa;
    if (!parse_isa(p, n, &isa) || isa == Isa::baseline) {
      *ok = false;
    } else if (low == Isa::baseline || static_cast<int>(isa) < static_cast<int>(low)) {
      low = isa;
    }
    if (!e) break;
    p = e + 1;  // an empty name after a comma is refused like any other
  }
  return low;
}

bool cpu_supports(Isa isa) {
  if (isa == Isa::baseline) return true;
  bool ok;
  const Isa hidden = lowest_hidden(&ok);
  // Every ISA from the lowest hidden one up (AVX-512 code uses AVX2 instructions too).
  if (hidden != Isa::baseline && static_cast<int>(isa) >= static_cast<int>(hidden)) return false;
#if PYAIML_HAVE_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12),
             f16c = c & (1u << 29);
  if (!(osxsave && avx && fma && f16c)) return false;
  const unsigned long long xcr0 = xgetbv0();
  if ((xcr0 & 0x6) != 0x6) return false;  // XMM and YMM state enabled by the OS
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool avx2 = b & (1u << 5), bmi2 = b & (1u << 8);
  if (!(avx2 && bmi2)) return false;
  if (isa == Isa::avx2) return true;
  const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  if (!(f && dq && bw && vl)) return false;
  return (xcr0 & 0xe6) == 0xe6;  // opmask and ZMM state enabled by the OS
#else
  return false;
#endif
}

bool cpu_has_avx512_vnni() {
  static const bool has = [] {
    const char* hide = std::getenv("PYAIML_HIDE_VNNI");
    if (hide && std::strcmp(hide, "1") == 0) return false;
    if (!cpu_supports(Isa::avx512)) return false;
#if PYAIML_HAVE_X86
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (c & (1u << 11)) != 0;
#else
    return false;
#endif
  }();
  return has;
}

Isa best_isa() {
  for (Isa isa : {Isa::avx512, Isa::avx2})
    if (isa_compiled(isa) && cpu_supports(isa)) return isa;
  return Isa::baseline;
}

void validate_isa_env() {
  bool hide_ok;
  lowest_hidden(&hide_ok);
  if (!hide_ok)
    throw std::invalid_argument(std::string("PYAIML_HIDE_ISA (a testing hook) must be a comma-separated list of "
                                            "avx2, avx512. Received '") +
                                std::getenv("PYAIML_HIDE_ISA") + "'");
  const char* env = std::getenv("PYAIML_ISA");
  if (!env || !*env) return;
  Isa isa;
  if (!parse_isa(env, std::strlen(env), &isa))
    throw std::invalid_argument(std::string("PYAIML_ISA must be one of baseline, avx2, avx512. Received '") +
                                env + "'");
  if (!isa_compiled(isa))
    throw std::invalid_argument(std::string("PYAIML_ISA=") + env + " is not compiled into this build");
  if (!cpu_supports(isa)) {
    std::string supported;
    for (Isa i : {Isa::baseline, Isa::avx2, Isa::avx512})
      if (isa_compiled(i) && cpu_supports(i)) supported += std::string(supported.empty() ? "" : ", ") + isa_name(i);
    throw std::invalid_argument(std::string("PYAIML_ISA=") + env + " is not supported by this CPU (supported: " +
                                supported + "); unset PYAIML_ISA to use the best of them");
  }
}

Isa active_isa() {
  static const Isa isa = [] {
    const char* env = std::getenv("PYAIML_ISA");
    Isa forced;
    if (env && *env && parse_isa(env, std::strlen(env), &forced) && isa_compiled(forced) && cpu_supports(forced))
      return forced;
    return best_isa();
  }();
  return isa;
}

}  // namespace pyaiml
