// Type-erased host tensors for the shared suite: one case is written once and run for every
// backend and element type, including CUDA's 16-bit types, which are kept here as raw bits.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "lcsm/core/tensor.hpp"

namespace lcsm::test {

enum class Dtype { f64, f32, f16, bf16 };

inline const char* name(Dtype d) {
  switch (d) {
    case Dtype::f64: return "float64";
    case Dtype::f32: return "float32";
    case Dtype::f16: return "float16";
    case Dtype::bf16: return "bfloat16";
  }
  return "?";
}
inline std::size_t bytes_of(Dtype d) { return d == Dtype::f64 ? 8 : d == Dtype::f32 ? 4 : 2; }
// The state's dtype for inputs of dtype d.
inline Dtype state_dtype(Dtype d) { return d == Dtype::f64 ? Dtype::f64 : Dtype::f32; }

// IEEE binary16 and bfloat16 with round-to-nearest-even (NaN stays NaN).
inline std::uint16_t to_bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7FC0;
  u += 0x7FFF + ((u >> 16) & 1);
  return static_cast<std::uint16_t>(u >> 16);
}
inline float from_bf16_bits(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline std::uint16_t to_f16_bits(float f) {
  if (std::isnan(f)) return 0x7E00;
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint32_t sign = (u >> 16) & 0x8000;
  const float a = std::fabs(f);
  if (a >= 65520.0f) return static_cast<std::uint16_t>(sign | 0x7C00);  // rounds to infinity
  if (a < 6.103515625e-05f) {  // subnormal: multiples of 2^-24, ties to even via nearbyint
    const float m = std::nearbyint(a * 16777216.0f);
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(m));
  }
  std::uint32_t v;
  std::memcpy(&v, &a, 4);
  v += 0xFFF + ((v >> 13) & 1);
  const std::uint32_t exp = (v >> 23) - 112, man = (v >> 13) & 0x3FF;
  return static_cast<std::uint16_t>(sign | (exp << 10) | man);
}
inline float from_f16_bits(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(man), -24);
  } else if (exp == 31) {
    f = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    f = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  }
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u |= sign;
  std::memcpy(&f, &u, 4);
  return f;
}

// x rounded to dtype d, as a double.
inline double round_to(Dtype d, double x) {
  switch (d) {
    case Dtype::f64: return x;
    case Dtype::f32: return static_cast<float>(x);
    case Dtype::f16: return from_f16_bits(to_f16_bits(static_cast<float>(x)));
    case Dtype::bf16: return from_bf16_bits(to_bf16_bits(static_cast<float>(x)));
  }
  return x;
}

// A rank-4 host tensor of any dtype with explicit strides over its own storage.
class Tensor {
 public:
  Tensor() = default;
  Tensor(Dtype dtype, const Shape<4>& shape) : Tensor(dtype, shape, contiguous_strides<4>(shape)) {}
  Tensor(Dtype dtype, const Shape<4>& shape, const Shape<4>& strides)
      : dtype_(dtype), shape_(shape), strides_(strides) {
    index_t span = 1;
    for (int d = 0; d < 4; ++d) span += (shape[d] - 1) * strides[d];
    for (int d = 0; d < 4; ++d)
      if (shape[d] == 0) span = 0;
    storage_.assign(static_cast<std::size_t>(span) * bytes_of(dtype), 0);
    elements_ = span;
  }
  // A [d0, d2, d1, d3]-ordered buffer seen as `shape`: exercises strided (e.g. [B, H, T, D]) layouts.
  static Tensor transposed_layout(Dtype dtype, const Shape<4>& shape) {
    const Shape<4> storage_shape{shape[0], shape[2], shape[1], shape[3]};
    const Shape<4> st = contiguous_strides<4>(storage_shape);
    return Tensor(dtype, shape, {st[0], st[2], st[1], st[3]});
  }

  Dtype dtype() const { return dtype_; }
  const Shape<4>& shape() const { return shape_; }
  const Shape<4>& strides() const { return strides_; }
  index_t size(int d) const { return shape_[d]; }
  index_t numel() const { return shape_[0] * shape_[1] * shape_[2] * shape_[3]; }
  index_t span_elements() const { return elements_; }
  void* data() { return storage_.empty() ? nullptr : storage_.data(); }
  const void* data() const { return storage_.empty() ? nullptr : storage_.data(); }
  std::size_t bytes() const { return storage_.size(); }

  template <class T>
  View<T, 4> view() {
    return {static_cast<T*>(data()), shape_, strides_};
  }
  template <class T>
  View<const T, 4> view() const {
    return {static_cast<const T*>(data()), shape_, strides_};
  }

  index_t offset(index_t a, index_t b, index_t c, index_t d) const {
    return a * strides_[0] + b * strides_[1] + c * strides_[2] + d * strides_[3];
  }
  double get(index_t a, index_t b, index_t c, index_t d) const {
    const index_t o = offset(a, b, c, d);
    switch (dtype_) {
      case Dtype::f64: return reinterpret_cast<const double*>(storage_.data())[o];
      case Dtype::f32: return reinterpret_cast<const float*>(storage_.data())[o];
      case Dtype::f16: return from_f16_bits(reinterpret_cast<const std::uint16_t*>(storage_.data())[o]);
      case Dtype::bf16: return from_bf16_bits(reinterpret_cast<const std::uint16_t*>(storage_.data())[o]);
    }
    return 0;
  }
  void set(index_t a, index_t b, index_t c, index_t d, double x) {
    const index_t o = offset(a, b, c, d);
    switch (dtype_) {
      case Dtype::f64: reinterpret_cast<double*>(storage_.data())[o] = x; break;
      case Dtype::f32: reinterpret_cast<float*>(storage_.data())[o] = static_cast<float>(x); break;
      case Dtype::f16: reinterpret_cast<std::uint16_t*>(storage_.data())[o] = to_f16_bits(static_cast<float>(x)); break;
      case Dtype::bf16:
        reinterpret_cast<std::uint16_t*>(storage_.data())[o] = to_bf16_bits(static_cast<float>(x));
        break;
    }
  }
  template <class F>
  void for_each_index(F&& f) const {
    for (index_t a = 0; a < shape_[0]; ++a)
      for (index_t b = 0; b < shape_[1]; ++b)
        for (index_t c = 0; c < shape_[2]; ++c)
          for (index_t d = 0; d < shape_[3]; ++d) f(a, b, c, d);
  }
  // Every storage element (including gaps of strided layouts) set to NaN.
  void poison() {
    for (index_t i = 0; i < elements_; ++i) {
      switch (dtype_) {
        case Dtype::f64:
          reinterpret_cast<double*>(storage_.data())[i] = std::numeric_limits<double>::quiet_NaN();
          break;
        case Dtype::f32: reinterpret_cast<float*>(storage_.data())[i] = std::numeric_limits<float>::quiet_NaN(); break;
        case Dtype::f16: reinterpret_cast<std::uint16_t*>(storage_.data())[i] = 0x7E00; break;
        case Dtype::bf16: reinterpret_cast<std::uint16_t*>(storage_.data())[i] = 0x7FC0; break;
      }
    }
  }
  // The values as a row-major float64 vector (and a view over it).
  std::vector<double> to_double() const {
    std::vector<double> out(numel());
    std::size_t i = 0;
    for_each_index([&](index_t a, index_t b, index_t c, index_t d) { out[i++] = get(a, b, c, d); });
    return out;
  }
  // Copies values in (row-major order), rounding to this dtype.
  void assign(const std::vector<double>& values) {
    std::size_t i = 0;
    for_each_index([&](index_t a, index_t b, index_t c, index_t d) { set(a, b, c, d, values[i++]); });
  }

 private:
  Dtype dtype_ = Dtype::f32;
  Shape<4> shape_{}, strides_{};
  std::vector<unsigned char> storage_;
  index_t elements_ = 0;
};

// N(0, sigma) values rounded to dtype: the reference then sees exactly what the backend sees.
inline std::vector<double> normal_values(std::mt19937_64& rng, index_t n, Dtype dtype, double sigma = 1.0) {
  std::normal_distribution<double> dist(0.0, sigma);
  std::vector<double> v(n);
  for (auto& x : v) x = round_to(dtype, dist(rng));
  return v;
}

}  // namespace lcsm::test
