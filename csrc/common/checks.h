// checks.h: precondition checks for the C++ side. Every check throws (pybind11 maps
// std::invalid_argument to ValueError); nothing here aborts. Messages follow the house
// shape: "<op>: <argument> must <rule>. Received <what>".
#pragma once
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace pyaiml {

template <class... Parts>
[[noreturn]] inline void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw std::invalid_argument(os.str());
}

#define PYAIML_CHECK(cond, ...)            \
  do {                                     \
    if (!(cond)) ::pyaiml::fail(__VA_ARGS__); \
  } while (0)

// Largest spatial size, padded size, (dilated) kernel size, stride, padding or dilation the
// conv and pool entry points accept (pyaiml/ops/_validate.py MAX_EXTENT is the same). With
// every such value in [0, kMaxExtent], any sum of a few of them and any product of two fit
// in int64, so the shape arithmetic after the check cannot overflow.
constexpr int64_t kMaxExtent = (int64_t(1) << 31) - 1;
// Largest zero-padded conv input, N * C * padded H * padded W elements (the kernels may
// copy it, cpu/conv.cpp pad_geom): its byte count and every offset into it fit in 64 bits.
constexpr int64_t kMaxPaddedElements = int64_t(1) << 60;

}  // namespace pyaiml
