// lcsm-ref's one error type: a bad descriptor, an unreadable or mis-shaped file, an inconsistent
// manifest. main() prints its message on one line and exits with status 2.
#pragma once

#include <stdexcept>
#include <string>

#include "lcsm/core/error.hpp"

namespace lcsm::ref {

class ToolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw ToolError(lcsm::detail::concat(parts...));
}

}  // namespace lcsm::ref
