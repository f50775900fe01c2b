// Pieces of the chunked (lightning) algorithm shared by the CPU operators: decay powers, the causal
// decay mask, and how a sequence is cut into segments that run on different threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "lcsm/core/sequences.hpp"
#include "lcsm/cpu/chunk_io.hpp"

namespace lcsm::cpu::detail {

// lambda^p = exp(g p) for p = 0..C; g <= 0, so no power ever overflows.
template <class S>
Vector<S> decay_powers(double g, index_t C) {
  Vector<S> pw(C + 1);
  for (index_t p = 0; p <= C; ++p) pw(p) = static_cast<S>(std::exp(g * static_cast<double>(p)));
  return pw;
}

// The unblocked forms of causal_scores' mask and causal_times (below), kept for callers that hold
// a whole dense block.
// a(i, j) *= lambda^(i-j) for j <= i, and 0 above the diagonal: a select, never a multiply by an
// out-of-range power.
template <class Block, class S>
void apply_causal_decay(Block&& a, index_t rows, const Vector<S>& pw, bool decayed) {
  for (index_t i = 0; i < rows; ++i) {
    S* row = &a(i, 0);
    if (decayed)
      for (index_t j = 0; j <= i; ++j) row[j] *= pw(i - j);
    for (index_t j = i + 1; j < rows; ++j) row[j] = S(0);
  }
}

// out = tri(a) * b, with tri(a) the lower (or upper) triangle of a, whose other half is already
// zero. A dense product is exact for finite b; when b holds NaN or Inf, 0 * NaN would leak it into
// rows that do not depend on it, so the product then skips the zero half explicitly.
template <class A, class B, class Out>
void triangular_product(const A& a, bool lower, const B& b, Out&& out) {
  if (b.allFinite()) {
    out.noalias() = a * b;
    return;
  }
  out.setZero();
  for (index_t i = 0; i < a.rows(); ++i)
    for (index_t j = lower ? 0 : i; j <= (lower ? i : a.cols() - 1); ++j) out.row(i) += a(i, j) * b.row(j);
}

// True when every entry of m is finite: x * 0 is 0 for finite x and NaN otherwise, and Eigen
// vectorizes the sum (allFinite() is a scalar loop here).
template <class M>
bool all_finite(const M& m) {
  using S = typename M::Scalar;
  return (m.array() * S(0)).sum() == S(0);
}

// The decay factors of one head for blocks of up to C tokens, made once per work item:
//   pw(p) = lambda^p for p = 0..C, and rev(m) = lambda^(C-1-m) for m = 0..C-1, so that the factors
//   lambda^(i-j) of row i of the causal mask, j = 0..i, are the contiguous run rev(C-1-i+j): the mask
//   loop then reads both operands in order and vectorizes.
template <class S>
struct Decay {
  Vector<S> pw, rev;
  bool decayed = false;
  Decay(double g, index_t C) : pw(decay_powers<S>(g, C)), rev(C), decayed(g != 0.0) {
    for (index_t m = 0; m < C; ++m) rev(m) = pw(C - 1 - m);
  }
  index_t chunk() const { return rev.size(); }
};

// Rows of a causal C x C block are computed in row blocks of `p` rows; row block r only needs
// columns [0, end of r): the blocks above the diagonal are never formed. p is a quarter of the
// chunk but at least 16 rows, a size Eigen's kernels still run at full speed.
inline index_t causal_panel(index_t c) { return std::max<index_t>(16, (c + 3) / 4); }

// a.block(r0, 0, n, r1) = x.middleRows(r0, n) * y.topRows(r1)^T for each row block [r0, r1) of the
// first c rows: the lower block triangle of x y^T. Then the causal decay mask on those entries:
// a(i, j) *= lambda^(i-j) for j <= i, a(i, j) = 0 for i < j < r1 (a select, never a multiply).
// Entries right of r1 are left unset; the products below never read them.
// between() runs after each product (the caller's prefetches).
template <class MA, class MX, class MY, class S, class F>
void causal_scores(MA& a, const MX& x, const MY& y, index_t c, const Decay<S>& d, F&& between) {
  const index_t p = causal_panel(c), C = d.chunk();
  for (index_t r0 = 0; r0 < c; r0 += p) {
    const index_t r1 = std::min(c, r0 + p);
    a.block(r0, 0, r1 - r0, r1).noalias() = x.middleRows(r0, r1 - r0) * y.topRows(r1).transpose();
    between();
    for (index_t i = r0; i < r1; ++i) {
      S* row = &a(i, 0);
      if (d.decayed) {
        const S* f = d.rev.data() + (C - 1 - i);
        for (index_t j = 0; j <= i; ++j) row[j] *= f[j];
      }
      for (index_t j = i + 1; j < r1; ++j) row[j] = S(0);
    }
  }
}

// out.topRows(c) = tril(a) * b (lower) or triu(a^T) * b, i.e. a^T * b with a lower (transposed),
// from the blocks causal_scores formed. The zero entries inside the diagonal blocks take part in
// the dense products, which is exact for finite b; when b holds NaN or Inf (b_finite false), 0 * NaN
// would leak it into rows that do not depend on it, so the product then skips the zeros exactly.
template <class MA, class MB, class MO, class F>
void causal_times(const MA& a, bool transposed, const MB& b, MO& out, index_t c, bool b_finite, F&& between) {
  const index_t p = causal_panel(c);
  if (!b_finite) {
    out.topRows(c).setZero();
    for (index_t i = 0; i < c; ++i)
      for (index_t j = 0; j <= i; ++j) {
        if (transposed) out.row(j) += a(i, j) * b.row(i);
        else out.row(i) += a(i, j) * b.row(j);
      }
    return;
  }
  for (index_t r0 = 0; r0 < c; r0 += p) {
    const index_t r1 = std::min(c, r0 + p);
    if (transposed)  // out[r0:r1] = a[r0:c, r0:r1]^T b[r0:c]
      out.middleRows(r0, r1 - r0).noalias() = a.block(r0, r0, c - r0, r1 - r0).transpose() * b.middleRows(r0, c - r0);
    else  // out[r0:r1] = a[r0:r1, 0:r1] b[0:r1]
      out.middleRows(r0, r1 - r0).noalias() = a.block(r0, 0, r1 - r0, r1) * b.topRows(r1);
    between();
  }
}

// Token ranges of one sequence that run as separate work items: boundaries[0] = 0, back() = length.
using Boundaries = std::vector<index_t>;

// One segment per sequence while there are at least as many (sequence, head) pairs as threads;
// otherwise each sequence is cut, at chunk boundaries, into up to threads / pairs segments of at
// least `min_chunks` chunks, so a single long head still uses every thread.
inline std::vector<Boundaries> plan_segments(const Sequences& seqs, index_t heads, index_t chunk, int threads,
                                             index_t min_chunks = 4) {
  const index_t pairs = std::max<index_t>(1, seqs.size() * heads);
  const index_t wanted = pairs >= threads ? 1 : (threads + pairs - 1) / pairs;
  std::vector<Boundaries> plan(seqs.size());
  for (index_t n = 0; n < seqs.size(); ++n) {
    const index_t length = seqs[n].length, chunks = (length + chunk - 1) / chunk;
    const index_t parts = std::max<index_t>(1, std::min(wanted, chunks / min_chunks));
    Boundaries& b = plan[n];
    for (index_t p = 0; p < parts; ++p) b.push_back(std::min(length, (chunks * p / parts) * chunk));
    b.push_back(length);
  }
  return plan;
}

// A (sequence, head, segment) work item; `heads` consecutive heads from `head` where the operator
// runs a group of heads together.
struct WorkItem {
  index_t seq, head, segment;
  index_t heads = 1;
};

// The (sequence, head, segment) items of the sequences cut into several segments: for each such
// sequence of `count` segments and each head, segments first .. first + count - 2 (the starts
// pass: first = 0, every segment but the last; the state-gradient pass: first = 1). Sizes
// per_head[n * H + h] to `count` entries for those pairs, where the pass stores its results.
template <class M>
std::vector<WorkItem> cut_segment_items(const std::vector<Boundaries>& plan, index_t H, index_t first,
                                        std::vector<std::vector<M>>& per_head) {
  std::vector<WorkItem> todo;
  for (index_t n = 0; n < static_cast<index_t>(plan.size()); ++n) {
    const index_t count = static_cast<index_t>(plan[n].size()) - 1;
    if (count < 2) continue;
    for (index_t h = 0; h < H; ++h) {
      per_head[n * H + h].resize(count);
      for (index_t s = first; s < first + count - 1; ++s) todo.push_back({n, h, s});
    }
  }
  return todo;
}

inline std::vector<WorkItem> work_items(const std::vector<Boundaries>& plan, index_t heads, index_t group = 1) {
  std::vector<WorkItem> items;
  for (index_t n = 0; n < static_cast<index_t>(plan.size()); ++n)
    for (index_t h = 0; h < heads; h += group)
      for (index_t s = 0; s + 1 < static_cast<index_t>(plan[n].size()); ++s)
        items.push_back({n, h, s, std::min(group, heads - h)});
  return items;
}

// How many heads of a sequence one work item runs together, block by block. In [B, T, H, D] memory
// the rows of the H heads of a token share one or two pages: a group of G heads walks each page
// once per block instead of G times (each of the G rows is otherwise a TLB miss, which a prefetch
// cannot hide). Up to 8 heads (8 x 128 floats is one 4 KiB page), while every thread still gets
// at least two items to balance; 1 when sequences are cut into segments.
constexpr index_t kMaxGroup = 8;

inline index_t head_group(const Sequences& seqs, const std::vector<Boundaries>& plan, index_t heads, int threads) {
  for (const auto& b : plan)
    if (b.size() > 2) return 1;
  const index_t pairs = seqs.size() * heads;
  return std::max<index_t>(
      1, std::min<index_t>({kMaxGroup, heads, pairs / (2 * static_cast<index_t>(std::max(threads, 1)))}));
}

}  // namespace lcsm::cpu::detail
