// Element types: their names for messages and the type the recurrent state is kept in.
#pragma once

#include <type_traits>

namespace lcsm {

// The state and the accumulators are float for every 16- and 32-bit input type and double for
// double inputs (docs/design.md, section 2: conventions).
template <class T>
struct StateType {
  using type = float;
};
template <>
struct StateType<double> {
  using type = double;
};
template <class T>
using state_t = typename StateType<std::remove_const_t<T>>::type;

// Human-readable element type names; CUDA's 16-bit types specialise this in lcsm/cuda/dtype.cuh.
template <class T>
struct DtypeName {
  static constexpr const char* value = "unknown";
};
template <>
struct DtypeName<float> {
  static constexpr const char* value = "float32";
};
template <>
struct DtypeName<double> {
  static constexpr const char* value = "float64";
};
template <class T>
constexpr const char* dtype_name() {
  return DtypeName<std::remove_const_t<T>>::value;
}

}  // namespace lcsm
