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

// A (sequence, head, segment) work item.
struct WorkItem {
  index_t seq, head, segment;
};

inline std::vector<WorkItem> work_items(const std::vector<Boundaries>& plan, index_t heads) {
  std::vector<WorkItem> items;
  for (index_t n = 0; n < static_cast<index_t>(plan.size()); ++n)
    for (index_t h = 0; h < heads; ++h)
      for (index_t s = 0; s + 1 < static_cast<index_t>(plan[n].size()); ++s) items.push_back({n, h, s});
  return items;
}

}  // namespace lcsm::cpu::detail
