// lcsm::Error and the argument checks every public entry point uses.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace lcsm {

// The one exception type of the library. Messages name the function, the argument, what was
// expected and what was given, e.g.
//   "lcsm::forward: argument 'k': expected shape [2, 64, 4, 32], got [2, 64, 4, 16]".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

// Throws "<where>: argument '<arg>': expected <expected>, got <actual>".
template <class Expected, class Actual>
[[noreturn]] void throw_argument(const char* where, const char* arg, const Expected& expected, const Actual& actual) {
  throw Error(concat(where, ": argument '", arg, "': expected ", expected, ", got ", actual));
}

template <class Expected, class Actual>
void check_argument(bool ok, const char* where, const char* arg, const Expected& expected, const Actual& actual) {
  if (!ok) throw_argument(where, arg, expected, actual);
}

}  // namespace detail
}  // namespace lcsm
