// Shape, stride and memory checks shared by every operator and backend.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>

#include "lcsm/core/error.hpp"
#include "lcsm/core/tensor.hpp"

namespace lcsm::detail {

template <int Rank>
std::string dims_string(const Shape<Rank>& shape) {
  return shape_string<Rank>(shape);
}

// Byte range [first, last] a view touches; {0, -1} for an empty view.
struct ByteRange {
  std::uintptr_t first = 0, last = 0;
  bool empty = true;
  bool overlaps(const ByteRange& o) const { return !empty && !o.empty && first <= o.last && o.first <= last; }
};

template <class T, int Rank>
ByteRange byte_range(const View<T, Rank>& v) {
  if (v.numel() == 0) return {};
  index_t hi = 0;
  for (int d = 0; d < Rank; ++d) hi += (v.size(d) - 1) * v.stride(d);
  const auto base = reinterpret_cast<std::uintptr_t>(v.data());
  return {base, base + static_cast<std::uintptr_t>(hi) * sizeof(T) + sizeof(T) - 1, false};
}

// A view that takes part in a call: non-null when it has elements, strides not negative.
template <class T, int Rank>
void check_memory(const char* where, const char* arg, const View<T, Rank>& v) {
  if (v.numel() > 0 && v.data() == nullptr)
    throw_argument(where, arg, "non-null data for a non-empty tensor",
                   concat("null data with shape ", dims_string<Rank>(v.shape())));
  for (int d = 0; d < Rank; ++d)
    if (v.stride(d) < 0)
      throw_argument(where, arg, "non-negative strides", concat("stride ", v.stride(d), " in dimension ", d));
}

// Keeps `expected` out of template deduction, so a braced list converts to Shape<Rank>.
template <int Rank>
struct ShapeArg {
  using type = Shape<Rank>;
};

template <class T, int Rank>
void check_shape(const char* where, const char* arg, const View<T, Rank>& v,
                 const typename ShapeArg<Rank>::type& expected, const char* layout) {
  if (v.shape() != expected)
    throw_argument(where, arg, concat("shape ", dims_string<Rank>(expected), " ", layout),
                   dims_string<Rank>(v.shape()));
}

// An output must not write one element through two indices: after sorting the dimensions by
// stride, each stride must step over everything the smaller dimensions span.
template <class T, int Rank>
void check_no_self_overlap(const char* where, const char* arg, const View<T, Rank>& v) {
  if (v.numel() <= 1) return;
  std::array<int, Rank> order{};
  for (int d = 0; d < Rank; ++d) order[d] = d;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return v.stride(a) < v.stride(b); });
  index_t span = 0;  // elements spanned by the dimensions seen so far, minus one
  for (int d : order) {
    if (v.size(d) <= 1) continue;
    if (v.stride(d) <= span)
      throw_argument(where, arg, "strides under which no two elements share memory",
                     concat("strides ", dims_string<Rank>(v.strides()), " for shape ", dims_string<Rank>(v.shape())));
    span += (v.size(d) - 1) * v.stride(d);
  }
}

template <class A, int RA, class B, int RB>
void check_disjoint(const char* where, const char* out_name, const View<A, RA>& out, const char* in_name,
                    const View<B, RB>& in) {
  if (byte_range(out).overlaps(byte_range(in)))
    throw_argument(where, out_name, concat("memory disjoint from '", in_name, "'"), "overlapping memory");
}

// An output view: present, valid memory, no self-overlap.
template <class T, int Rank>
void check_output(const char* where, const char* arg, const View<T, Rank>& v) {
  check_memory(where, arg, v);
  check_no_self_overlap(where, arg, v);
}

}  // namespace lcsm::detail
