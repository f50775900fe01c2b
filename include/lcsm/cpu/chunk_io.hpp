// Moving one chunk of one head between strided [B, T, H, D] views and dense Eigen row-major blocks.
#pragma once

#include <Eigen/Core>

#include "lcsm/core/tensor.hpp"

namespace lcsm::cpu::detail {

template <class S>
using Matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using Vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;

// dst.topRows(rows) = scale * x[b, t0 : t0 + rows, h, :], converted to S.
template <class S, class T>
void load_rows(const View<const T, 4>& x, index_t b, index_t t0, index_t rows, index_t h, S scale, Matrix<S>& dst) {
  const index_t D = x.size(3), sd = x.stride(3);
  for (index_t i = 0; i < rows; ++i) {
    const T* src = &x(b, t0 + i, h, 0);
    S* out = dst.row(i).data();
    if (sd == 1)
      for (index_t d = 0; d < D; ++d) out[d] = scale * static_cast<S>(src[d]);
    else
      for (index_t d = 0; d < D; ++d) out[d] = scale * static_cast<S>(src[d * sd]);
  }
}

// x[b, t0 : t0 + rows, h, :] = scale * src.topRows(rows), converted to T.
template <class T, class S>
void store_rows(const Matrix<S>& src, index_t rows, S scale, const View<T, 4>& x, index_t b, index_t t0, index_t h) {
  const index_t D = x.size(3), sd = x.stride(3);
  for (index_t i = 0; i < rows; ++i) {
    T* dst = &x(b, t0 + i, h, 0);
    const S* in = src.row(i).data();
    if (sd == 1)
      for (index_t d = 0; d < D; ++d) dst[d] = static_cast<T>(scale * in[d]);
    else
      for (index_t d = 0; d < D; ++d) dst[d * sd] = static_cast<T>(scale * in[d]);
  }
}

// Asks the caches for x[b, t0 : t0 + rows, h, :] ahead of its use (for_write: o, dq, ... about to be
// stored). In [B, T, H, D] memory the rows of one head lie H*D elements apart, a page or more, so the
// hardware prefetchers (which stay inside a page) do not find them; without this every row of
// every block is a cold miss. Only inner-contiguous rows are prefetched; lines go to L2.
template <class T>
void prefetch_rows(const View<T, 4>& x, index_t b, index_t t0, index_t rows, index_t h, bool for_write) {
  if (rows <= 0 || x.stride(3) != 1) return;
  constexpr index_t line = 64;
  const index_t bytes = x.size(3) * static_cast<index_t>(sizeof(T));
  for (index_t i = 0; i < rows; ++i) {
    const char* row = reinterpret_cast<const char*>(&x(b, t0 + i, h, 0));
    for (index_t off = 0; off < bytes; off += line) {
      if (for_write) __builtin_prefetch(row + off, 1, 2);
      else __builtin_prefetch(row + off, 0, 2);
    }
  }
}

// A [N, H, K, V] state slice <-> a dense K x V matrix.
template <class S>
void load_state(const View<const S, 4>& s, index_t n, index_t h, Matrix<S>& dst) {
  for (index_t k = 0; k < dst.rows(); ++k)
    for (index_t c = 0; c < dst.cols(); ++c) dst(k, c) = s(n, h, k, c);
}
template <class S>
void store_state(const Matrix<S>& src, const View<S, 4>& s, index_t n, index_t h) {
  for (index_t k = 0; k < src.rows(); ++k)
    for (index_t c = 0; c < src.cols(); ++c) s(n, h, k, c) = src(k, c);
}

}  // namespace lcsm::cpu::detail
