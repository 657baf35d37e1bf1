// checks.h: precondition checks for the C++ side. Every check throws (pybind11 maps
// std::invalid_argument to ValueError); nothing here aborts. Messages follow the house
// shape: "<op>: <argument> must <rule>. Received <what>".
#pragma once
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

}  // namespace pyaiml
