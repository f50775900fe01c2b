// How the chunked CPU operators split their work: sequences cut into segments, (sequence, group of
// heads, segment) work items, and the block walks of one item, forwards and backwards.
#pragma once

#include <algorithm>
#include <vector>

#include "lcsm/core/sequences.hpp"
#include "lcsm/cpu/chunk_io.hpp"

namespace lcsm::cpu::detail {

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

// What every chunked entry point sets up: the sequences, their segments and the work items.
struct SegmentPlan {
  Sequences seqs;
  std::vector<Boundaries> plan;
  index_t heads, group;
  std::vector<WorkItem> items;
  SegmentPlan(const Sequences& s, index_t H, index_t chunk, int threads)
      : seqs(s), plan(plan_segments(s, H, chunk, threads)), heads(H), group(head_group(s, plan, H, threads)),
        items(work_items(plan, H, group)) {}
  index_t segments(index_t n) const { return static_cast<index_t>(plan[n].size()) - 1; }
  bool cut(index_t n) const { return segments(n) > 1; }
  index_t begin(const WorkItem& it) const { return plan[it.seq][it.segment]; }
  index_t end(const WorkItem& it) const { return plan[it.seq][it.segment + 1]; }
  bool first(const WorkItem& it) const { return it.segment == 0; }
  bool last(const WorkItem& it) const { return it.segment + 1 == segments(it.seq); }
};

// The blocks of tokens [begin, end) in order, and within a block heads head0 .. head0 + G - 1:
// block(g, t, c, update, next) with update false on the last block unless keep_state, and next the
// rows that run after this block (the same rows of the group's next head, or the first head's next
// rows after the last head: the heads of a group share the pages of their rows, so only one
// prefetch pass in G meets pages the TLB has not seen yet).
template <class Block>
void walk_forward(index_t begin, index_t end, index_t C, index_t head0, index_t G, bool keep_state, Block&& block) {
  for (index_t t = begin; t < end; t += C) {
    const index_t c = std::min(C, end - t);
    const bool update = t + c < end || keep_state;
    for (index_t g = 0; g < G; ++g)
      block(g, t, c, update,
            g + 1 < G ? NextRows{t, c, head0 + g + 1} : NextRows{t + c, std::min(C, end - t - c), head0});
  }
}

// The same walking the blocks backwards (update false on the first block unless keep_state).
template <class Block>
void walk_backward(index_t begin, index_t end, index_t C, index_t head0, index_t G, bool keep_state, Block&& block) {
  const index_t blocks = (end - begin + C - 1) / C;
  for (index_t m = blocks - 1; m >= 0; --m) {
    const index_t t = begin + m * C, c = std::min(C, end - t);
    const index_t prev = m > 0 ? C : 0;  // the block before this one, next in this walk
    for (index_t g = 0; g < G; ++g)
      block(g, t, c, m > 0 || keep_state, g + 1 < G ? NextRows{t, c, head0 + g + 1} : NextRows{t - prev, prev, head0});
  }
}

}  // namespace lcsm::cpu::detail
