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

// load_rows, and in the same pass decayed.row(i) = factor[i] * dst.row(i): the copy a block needs
// scaled by its decay factors (lambda^(i+1) for queries, lambda^(c-1-j) for keys) without a
// second pass over it.
template <class S, class T>
void load_rows_decayed(const View<const T, 4>& x, index_t b, index_t t0, index_t rows, index_t h, S scale,
                       Matrix<S>& dst, const S* factor, Matrix<S>& decayed) {
  const index_t D = x.size(3), sd = x.stride(3);
  for (index_t i = 0; i < rows; ++i) {
    const T* src = &x(b, t0 + i, h, 0);
    S* out = dst.row(i).data();
    S* out2 = decayed.row(i).data();
    const S f = factor[i];
    if (sd == 1)
      for (index_t d = 0; d < D; ++d) {
        const S y = scale * static_cast<S>(src[d]);
        out[d] = y;
        out2[d] = f * y;
      }
    else
      for (index_t d = 0; d < D; ++d) {
        const S y = scale * static_cast<S>(src[d * sd]);
        out[d] = y;
        out2[d] = f * y;
      }
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

// Software prefetch of the rows of a block, handed out a few cache lines at a time between the
// block's matrix products. In [B, T, H, D] memory the rows of one head lie H*D elements apart, a
// page or more, so the hardware prefetchers (which stay inside a page) never run ahead of them, and
// without this every row of every block is a cold miss the core waits for. Issued in one burst,
// the prefetches queue up behind the few outstanding-miss slots and stall the products just as the
// misses would; spread thinly over the products they complete in their shadow. Only
// inner-contiguous rows are prefetched; the lines go to L2 (outputs: with intent to write).
class Prefetcher {
 public:
  template <class T>
  void add(const View<T, 4>& x, index_t b, index_t t0, index_t rows, index_t h, bool for_write) {
    if (rows <= 0 || x.stride(3) != 1 || runs_ == kMaxRuns) return;
    const index_t bytes = x.size(3) * static_cast<index_t>(sizeof(T));
    // A row stride matters only between rows: a single row's may be anything (a size-1 time
    // dimension has a stride nothing multiplies), and rows > 1 lie inside the checked extent.
    const index_t stride = rows > 1 ? x.stride(1) * static_cast<index_t>(sizeof(T)) : 0;
    run_[runs_++] = {reinterpret_cast<const char*>(&x(b, t0, h, 0)), stride, rows, (bytes + kLine - 1) / kLine,
                     for_write};
    total_ += rows * run_[runs_ - 1].lines;
  }
  // Issues about 1/parts of all the lines added (the rest on the last of `parts` calls).
  void issue_part(int parts) { issue((total_ + parts - 1) / parts); }
  void issue_all() { issue(total_); }
  void clear() { runs_ = cur_run_ = cur_row_ = cur_line_ = total_ = 0; }

 private:
  static constexpr index_t kLine = 64;
  static constexpr int kMaxRuns = 8;
  struct Run {
    const char* base;
    index_t stride, rows, lines;
    bool write;
  };
  void issue(index_t n) {
    for (; n > 0 && cur_run_ < runs_; --n) {
      const Run& r = run_[cur_run_];
      const char* p = r.base + cur_row_ * r.stride + cur_line_ * kLine;
      if (r.write) __builtin_prefetch(p, 1, 2);
      else __builtin_prefetch(p, 0, 2);
      if (++cur_line_ == r.lines) {
        cur_line_ = 0;
        if (++cur_row_ == r.rows) {
          cur_row_ = 0;
          ++cur_run_;
        }
      }
    }
  }
  Run run_[kMaxRuns] = {};
  int runs_ = 0, cur_run_ = 0;
  index_t cur_row_ = 0, cur_line_ = 0, total_ = 0;
};

// The prefetches of the next block are spread over this many points of a block's products.
constexpr int kPrefetchParts = 10;

// Where the prefetches of a block point: the rows [t, t + c) of head h that come next.
struct NextRows {
  index_t t, c, h;
};

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
