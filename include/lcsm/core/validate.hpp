// Shape, stride and memory checks shared by every operator and backend, and the one aliasing rule.
//
// Every view an entry point takes goes through Operands: in() checks an input's memory (extents and
// strides >= 0, an element count and a byte extent that fit in 64 bits and in the address space,
// non-null data when it holds elements), out() also checks that no two of an output's elements
// share memory, and check() applies the aliasing rule to all of them at once:
//   every output is disjoint from every input and from every other output,
// by byte extent [lowest, highest address] (a conservative test: two interleaved outputs are
// rejected too). The only exception is an output declared in place of an input (out(name, view,
// in_place_of)): it may be exactly that input (the same address, shape and strides), never a part of
// it. The in-place arguments are documented where they are taken (the forward's final state over
// the initial state, the decode state, the Toeplitz history).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "lcsm/core/error.hpp"
#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"

namespace lcsm::detail {

template <int Rank>
std::string dims_string(const Shape<Rank>& shape) {
  return shape_string<Rank>(shape);
}

// Byte range [first, last] a view touches; empty for a view without elements.
struct ByteRange {
  std::uintptr_t first = 0, last = 0;
  bool empty = true;
  bool overlaps(const ByteRange& o) const { return !empty && !o.empty && first <= o.last && o.first <= last; }
};

// The element offset of a view's last element (sizes >= 1, strides >= 0), or false on overflow.
template <class T, int Rank>
bool last_offset(const View<T, Rank>& v, index_t& hi) {
  hi = 0;
  for (int d = 0; d < Rank; ++d) {
    index_t step;
    if (mul_overflows(v.size(d) - 1, v.stride(d), step) || add_overflows(hi, step, hi)) return false;
  }
  return true;
}

// The byte extent of a view whose memory was checked (check_memory); saturates to the end of the
// address space otherwise, so that an unchecked view can only look larger.
template <class T, int Rank>
ByteRange byte_range(const View<T, Rank>& v) {
  if (v.numel() == 0) return {};
  const auto base = reinterpret_cast<std::uintptr_t>(v.data());
  const auto top = ~std::uintptr_t{0};
  index_t hi = 0, bytes = 0;
  if (!last_offset(v, hi) || add_overflows(hi, 1, hi) || mul_overflows(hi, static_cast<index_t>(sizeof(T)), bytes) ||
      static_cast<std::uintptr_t>(bytes) - 1 > top - base)
    return {base, top, false};
  return {base, base + static_cast<std::uintptr_t>(bytes) - 1, false};
}

// A view that takes part in a call: extents and strides >= 0, an element count that fits in int64,
// a byte extent that fits in the address space from its base, non-null data when it has elements.
template <class T, int Rank>
void check_memory(const char* where, const char* arg, const View<T, Rank>& v) {
  for (int d = 0; d < Rank; ++d)
    if (v.size(d) < 0) throw_argument(where, arg, "extents >= 0", concat("shape ", dims_string<Rank>(v.shape())));
  for (int d = 0; d < Rank; ++d)
    if (v.stride(d) < 0)
      throw_argument(where, arg, "non-negative strides", concat("stride ", v.stride(d), " in dimension ", d));
  bool empty = false;
  for (int d = 0; d < Rank; ++d) empty = empty || v.size(d) == 0;
  if (empty) return;
  index_t count = 1;
  for (int d = 0; d < Rank; ++d)
    if (mul_overflows(count, v.size(d), count))
      throw_argument(where, arg, "an element count that fits in 64 bits",
                     concat("shape ", dims_string<Rank>(v.shape()), " (the count overflows)"));
  if (v.data() == nullptr)
    throw_argument(where, arg, "non-null data for a non-empty tensor",
                   concat("null data with shape ", dims_string<Rank>(v.shape())));
  index_t hi = 0, bytes = 0;
  const auto base = reinterpret_cast<std::uintptr_t>(v.data());
  if (!last_offset(v, hi) || add_overflows(hi, 1, hi) || mul_overflows(hi, static_cast<index_t>(sizeof(T)), bytes) ||
      static_cast<std::uintptr_t>(bytes) - 1 > ~std::uintptr_t{0} - base)
    throw_argument(
        where, arg, "sizes and strides whose extent fits in 64 bits and in the address space",
        concat("shape ", dims_string<Rank>(v.shape()), " with strides ", dims_string<Rank>(v.strides()), " and ",
               sizeof(T), "-byte elements from ", static_cast<const void*>(v.data()), " (the extent overflows)"));
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
// stride, each stride must step over everything the smaller dimensions span. (After check_memory,
// nothing here overflows.)
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

// An output view: valid memory, no self-overlap.
template <class T, int Rank>
void check_output(const char* where, const char* arg, const View<T, Rank>& v) {
  check_memory(where, arg, v);
  check_no_self_overlap(where, arg, v);
}

// The byte extent of cu_seqlens' count offsets (int32 or int64, any stride).
inline ByteRange byte_range(const CuSeqlens& cu) {
  if (!cu.present() || cu.count() <= 0 || cu.data() == nullptr) return {};
  const index_t element = cu.is_int64() ? 8 : 4;
  const auto base = reinterpret_cast<std::uintptr_t>(cu.data());
  const auto top = ~std::uintptr_t{0};
  index_t hi = 0, bytes = 0;
  if (mul_overflows(cu.count() - 1, cu.stride(), hi) || add_overflows(hi, 1, hi) || mul_overflows(hi, element, bytes) ||
      static_cast<std::uintptr_t>(bytes) - 1 > top - base)
    return {base, top, false};
  return {base, base + static_cast<std::uintptr_t>(bytes) - 1, false};
}

// cu_seqlens' memory: a count >= 2 in non-null memory, stride >= 1, an extent that fits. Reads nothing.
inline void check_cu_seqlens_memory(const char* where, const CuSeqlens& cu) {
  if (!cu.present()) return;
  check_argument(cu.count() >= 2 && cu.data() != nullptr, where, "cu_seqlens",
                 "at least 2 offsets (N + 1 for N sequences) in non-null memory",
                 concat(cu.count(), " offsets at ", cu.data()));
  check_argument(cu.stride() >= 1, where, "cu_seqlens", "a stride >= 1", concat("stride ", cu.stride()));
  const ByteRange r = byte_range(cu);
  check_argument(r.last != ~std::uintptr_t{0}, where, "cu_seqlens",
                 "a count and stride whose extent fits in 64 bits and in the address space",
                 concat(cu.count(), " offsets with stride ", cu.stride(), " from ", cu.data()));
}

// Validates offsets in host memory against a packed batch of `batch` rows and `time` tokens:
// memory first (nothing is read beyond count offsets), then offsets[0] = 0, non-decreasing, ending
// at time.
inline void check_cu_seqlens(const char* where, const CuSeqlens& cu, index_t batch, index_t time) {
  if (!cu.present()) return;
  check_cu_seqlens_memory(where, cu);
  check_argument(batch == 1, where, "cu_seqlens", "a packed batch with B = 1", concat("B = ", batch));
  check_argument(cu[0] == 0, where, "cu_seqlens", "offsets[0] = 0", concat("offsets[0] = ", cu[0]));
  for (index_t n = 1; n < cu.count(); ++n)
    if (cu[n] < cu[n - 1])
      throw_argument(where, "cu_seqlens", "non-decreasing offsets",
                     concat("offsets[", n, "] = ", cu[n], " < offsets[", n - 1, "] = ", cu[n - 1]));
  const index_t last = cu[cu.count() - 1];
  check_argument(last == time, where, "cu_seqlens", concat("offsets[N] = packed length T = ", time),
                 concat("offsets[N] = ", last));
}

// The aliasing rule over the operands of one call (see the top of this file).
class Operands {
 public:
  explicit Operands(const char* where) : where_(where) {}

  // An input: its memory is checked now (check_memory, absent views too: their extents and strides
  // must still be >= 0); absent views hold no bytes and take no further part.
  template <class T, int Rank>
  Operands& in(const char* name, const View<T, Rank>& v) {
    check_memory(where_, name, v);
    if (v.absent()) return *this;
    return add(name, v, false, nullptr);
  }
  Operands& in(const char* name, const CuSeqlens& cu) {
    if (!cu.present()) return *this;
    check_cu_seqlens_memory(where_, cu);
    Item& it = push(name);
    it.range = byte_range(cu);
    it.data = cu.data();
    return *this;
  }
  // An output: memory and self-overlap are checked now (check_output). `in_place_of` names an input
  // it may be exactly (an argument advanced in place).
  template <class T, int Rank>
  Operands& out(const char* name, const View<T, Rank>& v, const char* in_place_of = nullptr) {
    check_output(where_, name, v);
    if (v.absent()) return *this;
    return add(name, v, true, in_place_of);
  }

  // Throws for the first output that overlaps an input or an earlier output (naming both).
  void check() const {
    for (int i = 0; i < count_; ++i) {
      const Item& o = items_[i];
      if (!o.output) continue;
      for (int j = 0; j < count_; ++j) {
        const Item& x = items_[j];
        if (j == i || (x.output && j > i) || !o.range.overlaps(x.range)) continue;
        const bool in_place = !x.output && o.in_place_of && std::string(o.in_place_of) == x.name;
        if (in_place && same_view(o, x)) continue;
        throw_argument(where_, o.name,
                       concat("memory disjoint from '", x.name, "'",
                              in_place ? " or exactly the same view (advanced in place)"
                                       : " (an output overlaps no input and no other output)"),
                       concat("overlapping memory: bytes [", o.range.first, ", ", o.range.last, "] and [",
                              x.range.first, ", ", x.range.last, "]"));
      }
    }
  }

 private:
  static constexpr int kMax = 16;
  struct Item {
    const char* name = nullptr;
    ByteRange range;
    const void* data = nullptr;
    std::array<index_t, 4> shape{}, strides{};
    int rank = 0;
    std::size_t element = 0;
    bool output = false;
    const char* in_place_of = nullptr;
  };
  static bool same_view(const Item& a, const Item& b) {
    return a.data == b.data && a.rank == b.rank && a.element == b.element && a.shape == b.shape &&
           a.strides == b.strides;
  }
  Item& push(const char* name) {
    if (count_ == kMax) throw Error(concat(where_, ": internal error: more than ", kMax, " operands"));
    Item& it = items_[count_++];
    it.name = name;
    return it;
  }
  template <class T, int Rank>
  Operands& add(const char* name, const View<T, Rank>& v, bool output, const char* in_place_of) {
    static_assert(Rank <= 4, "operands have rank <= 4");
    Item& it = push(name);
    it.range = byte_range(v);
    it.data = v.data();
    it.rank = Rank;
    it.element = sizeof(T);
    for (int d = 0; d < Rank; ++d) {
      it.shape[d] = v.size(d);
      it.strides[d] = v.stride(d);
    }
    it.output = output;
    it.in_place_of = in_place_of;
    return *this;
  }

  const char* where_;
  std::array<Item, kMax> items_{};
  int count_ = 0;
};

}  // namespace lcsm::detail
