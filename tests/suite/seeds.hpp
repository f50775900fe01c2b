// Fresh random inputs on every run: seeds derive from Catch's --rng-seed (CTest passes "time"),
// which Catch prints, so a failing run can be repeated with the same seed.
#pragma once

#include <catch2/catch.hpp>
#include <cstdint>

namespace lcsm::test {

inline std::uint64_t fresh_seed() {
  static std::uint64_t counter = 0;
  return (static_cast<std::uint64_t>(Catch::rngSeed()) << 20) + 0x9E3779B97F4A7C15ull * ++counter;
}

}  // namespace lcsm::test
