// Strided, non-owning tensor views with 64-bit extents and strides (in elements).
//
// A View is a pointer plus a shape and strides, like Eigen's Map or a DLPack tensor. It never owns
// or copies memory, so a [B, H, T, D] buffer is used as [B, T, H, D] by swapping two strides:
//     auto q = lcsm::view(ptr, {B, H, T, D}).transposed(1, 2);   // now [B, T, H, D], no copy
// A default-constructed View is "absent": null data and all extents 0. Optional arguments
// (initial state, final state, gradients nobody asked for) are passed as absent views.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lcsm/core/error.hpp"

namespace lcsm {

using index_t = std::int64_t;

namespace detail {

// Checked int64 arithmetic on sizes, strides and positions that come from the caller: true when the
// exact result did not fit (out is then unspecified). Every such computation in the library goes
// through these (or is bounded by a value they checked), so no size wraps around.
constexpr index_t kIndexMax = std::numeric_limits<index_t>::max();
constexpr index_t kIndexMin = std::numeric_limits<index_t>::min();

inline bool mul_overflows(index_t a, index_t b, index_t& out) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_mul_overflow(a, b, &out);
#else
  if (a != 0 && b != 0 &&
      (a > 0 ? (b > 0 ? a > kIndexMax / b : b < kIndexMin / a) : (b > 0 ? a < kIndexMin / b : a < kIndexMax / b)))
    return true;
  out = a * b;
  return false;
#endif
}
inline bool add_overflows(index_t a, index_t b, index_t& out) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_add_overflow(a, b, &out);
#else
  if ((b > 0 && a > kIndexMax - b) || (b < 0 && a < kIndexMin - b)) return true;
  out = a + b;
  return false;
#endif
}
// a * b, or kIndexMax where that overflows (for estimates that only need to be large).
inline index_t saturating_mul(index_t a, index_t b) {
  index_t out;
  return mul_overflows(a, b, out) ? kIndexMax : out;
}

}  // namespace detail

template <int Rank>
using Shape = std::array<index_t, Rank>;

template <class T, int Rank>
class View {
  static_assert(Rank >= 1, "a View has at least one dimension");

 public:
  using element_type = T;
  static constexpr int rank = Rank;

  View() = default;
  View(T* data, const Shape<Rank>& shape, const Shape<Rank>& strides) : data_(data), shape_(shape), strides_(strides) {}

  // Every view converts to its read-only counterpart.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_const_v<U>>>
  View(const View<U, Rank>& other)  // NOLINT(google-explicit-constructor): like T* -> const T*
      : data_(other.data()), shape_(other.shape()), strides_(other.strides()) {}

  T* data() const { return data_; }
  const Shape<Rank>& shape() const { return shape_; }
  const Shape<Rank>& strides() const { return strides_; }
  index_t size(int dim) const { return shape_[dim]; }
  index_t stride(int dim) const { return strides_[dim]; }

  // The number of elements; 0 when an extent is 0, detail::kIndexMax when the product overflows (the
  // argument checks, core/validate.hpp, reject such views before anything else counts them).
  index_t numel() const {
    for (index_t e : shape_)
      if (e == 0) return 0;
    index_t n = 1;
    for (index_t e : shape_)
      if (detail::mul_overflows(n, e, n)) return detail::kIndexMax;
    return n;
  }
  // Absent: null data and an extent 0, what a default-constructed View is. A present view may still
  // hold zero elements; a null view with no zero extent is present (and then an error).
  bool absent() const {
    if (data_ != nullptr) return false;
    for (index_t e : shape_)
      if (e == 0) return true;
    return false;
  }
  bool present() const { return !absent(); }

  template <class... Index>
  index_t offset(Index... index) const {
    static_assert(sizeof...(Index) == Rank, "one index per dimension");
    const index_t idx[] = {static_cast<index_t>(index)...};
    index_t off = 0;
    for (int d = 0; d < Rank; ++d) off += idx[d] * strides_[d];
    return off;
  }
  template <class... Index>
  T& operator()(Index... index) const {
    return data_[offset(index...)];
  }

  // The same memory with dimensions a and b swapped.
  View transposed(int a, int b) const {
    View out = *this;
    std::swap(out.shape_[a], out.shape_[b]);
    std::swap(out.strides_[a], out.strides_[b]);
    return out;
  }

  // True when the innermost dimension is unit-stride (or has at most one element).
  bool inner_contiguous() const { return shape_[Rank - 1] <= 1 || strides_[Rank - 1] == 1; }

 private:
  T* data_ = nullptr;
  Shape<Rank> shape_{};
  Shape<Rank> strides_{};
};

// Row-major strides for a shape (saturating: a shape whose strides overflow gives a view that the
// argument checks reject).
template <int Rank>
Shape<Rank> contiguous_strides(const Shape<Rank>& shape) {
  Shape<Rank> strides{};
  index_t s = 1;
  for (int d = Rank - 1; d >= 0; --d) {
    strides[d] = s;
    s = detail::saturating_mul(s, shape[d]);
  }
  return strides;
}

// lcsm::view(ptr, {B, T, H, D}): a row-major view of caller memory.
template <class T, std::size_t Rank>
View<T, static_cast<int>(Rank)> view(T* data, const index_t (&shape)[Rank]) {
  Shape<static_cast<int>(Rank)> s{};
  for (std::size_t d = 0; d < Rank; ++d) s[d] = shape[d];
  return {data, s, contiguous_strides<static_cast<int>(Rank)>(s)};
}

// lcsm::view(ptr, {B, T, H, D}, {strides...}): an arbitrary strided view (strides in elements).
template <class T, std::size_t Rank>
View<T, static_cast<int>(Rank)> view(T* data, const index_t (&shape)[Rank], const index_t (&strides)[Rank]) {
  Shape<static_cast<int>(Rank)> s{}, st{};
  for (std::size_t d = 0; d < Rank; ++d) {
    s[d] = shape[d];
    st[d] = strides[d];
  }
  return {data, s, st};
}

template <class T, int Rank>
View<const T, Rank> as_const(const View<T, Rank>& v) {
  return v;
}

// "[2, 64, 4, 32]" for messages.
template <int Rank>
std::string shape_string(const Shape<Rank>& shape) {
  std::string s = "[";
  for (int d = 0; d < Rank; ++d) {
    if (d) s += ", ";
    s += std::to_string(shape[d]);
  }
  return s + "]";
}

}  // namespace lcsm

namespace lcsm {

// A typed view over a tensor whose rank is only known at run time (a framework tensor, a DLPack
// handle): throws lcsm::Error naming `name` when the rank differs. Empty strides mean row-major.
template <int Rank, class T>
View<T, Rank> view_as(T* data, const std::vector<index_t>& shape, const std::vector<index_t>& strides = {},
                      const char* name = "tensor") {
  if (static_cast<int>(shape.size()) != Rank) {
    std::string got = "[";
    for (std::size_t d = 0; d < shape.size(); ++d) got += (d ? ", " : "") + std::to_string(shape[d]);
    throw Error("lcsm::view_as: argument '" + std::string(name) + "': expected rank " + std::to_string(Rank) +
                ", got rank " + std::to_string(shape.size()) + " with shape " + got + "]");
  }
  if (!strides.empty() && strides.size() != shape.size())
    throw Error("lcsm::view_as: argument '" + std::string(name) + "': expected " + std::to_string(Rank) +
                " strides, got " + std::to_string(strides.size()));
  Shape<Rank> s{}, st{};
  for (int d = 0; d < Rank; ++d) s[d] = shape[d];
  st = strides.empty() ? contiguous_strides<Rank>(s) : st;
  if (!strides.empty())
    for (int d = 0; d < Rank; ++d) st[d] = strides[d];
  return {data, s, st};
}

}  // namespace lcsm
