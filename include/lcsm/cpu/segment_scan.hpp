// The states at the segment boundaries of cut sequences, written once for every chunked family.
//
// A sequence cut into segments runs its segments on different threads, each from the state before
// it. Those states come from a scan: every segment's own contribution from a zero state is
// computed first, in parallel, then combined in order,
//   start[0] = initial,   start[s + 1] = Lambda_s start[s] + delta_s          (forward)
//   end[last] = d_final,  end[s - 1]   = Lambda_s^T end[s] + gamma_s          (backward: the state gradient)
// with Lambda_s the decay over segment s. A family describes its recurrence by a scan policy:
//   using State;                                          a state (or state gradient) of one head
//   State load(const View<const S, 4>& x, n, h) const;    x's slice, or a zero State when x is absent
//   State delta(int worker, const WorkItem&, begin, end) const;   forward contribution from zero
//   State gamma(int worker, const WorkItem&, begin, end) const;   backward contribution from zero
//   void decay(State&, n, h, begin, end) const;           State = Lambda over tokens [begin, end) State
//   void add(State&, const State&) const;
// (gamma only where segment_end_dstates is used).
#pragma once

#include <utility>
#include <vector>

#include "lcsm/cpu/device.hpp"
#include "lcsm/cpu/segments.hpp"

namespace lcsm::cpu::detail {

// The load and add of a scan policy whose State is a dense rows x cols matrix.
template <class S>
struct MatrixScanState {
  using State = Matrix<S>;
  index_t rows, cols;
  State load(const View<const S, 4>& x, index_t n, index_t h) const {
    State s(rows, cols);
    if (x.present()) load_state(x, n, h, s);
    else s.setZero();
    return s;
  }
  void add(State& s, const State& d) const { s += d; }
};

// Values per (sequence, head) and segment, [n * H + h][s]; empty for the pairs nothing was asked for.
template <class State>
using PerSegment = std::vector<std::vector<State>>;

// compute(worker, item, begin, end) for every segment s of every head of the sequences n with
// wanted(n, s), in parallel, stored at [n * H + h][s].
template <class State, class Wanted, class Compute>
PerSegment<State> per_segment(const SegmentPlan& sp, int threads, Wanted&& wanted, Compute&& compute) {
  const index_t H = sp.heads;
  PerSegment<State> out(sp.seqs.size() * H);
  std::vector<WorkItem> todo;
  for (index_t n = 0; n < sp.seqs.size(); ++n)
    for (index_t h = 0; h < H; ++h)
      for (index_t s = 0; s < sp.segments(n); ++s)
        if (wanted(n, s)) {
          out[n * H + h].resize(sp.segments(n));
          todo.push_back({n, h, s});
        }
  parallel_for(threads, static_cast<index_t>(todo.size()), [&](index_t i, int worker) {
    const WorkItem it = todo[i];
    out[it.seq * H + it.head][it.segment] =
        compute(worker, it, sp.plan[it.seq][it.segment], sp.plan[it.seq][it.segment + 1]);
  });
  return out;
}

// In place over one (n, h): v[s] = delta_s in, the state before segment s out (v[0] = init).
template <class Scan>
void scan_starts(const Scan& f, const Boundaries& b, index_t n, index_t h, typename Scan::State init,
                 std::vector<typename Scan::State>& v) {
  const index_t count = static_cast<index_t>(v.size());
  for (index_t s = 0; s < count; ++s) {
    typename Scan::State delta = std::move(v[s]);
    v[s] = init;
    if (s + 1 < count) {
      f.decay(init, n, h, b[s], b[s + 1]);
      f.add(init, delta);
    }
  }
}

// In place over one (n, h): v[s] = gamma_s in, the state gradient after segment s out (v[last] = init).
template <class Scan>
void scan_ends(const Scan& f, const Boundaries& b, index_t n, index_t h, typename Scan::State init,
               std::vector<typename Scan::State>& v) {
  for (index_t s = static_cast<index_t>(v.size()) - 1; s >= 0; --s) {
    typename Scan::State gamma = std::move(v[s]);
    v[s] = init;
    if (s > 0) {
      f.decay(init, n, h, b[s], b[s + 1]);
      f.add(init, gamma);
    }
  }
}

// The state before every segment of the cut sequences (empty for the others).
template <class Scan, class S>
PerSegment<typename Scan::State> segment_start_states(const Scan& f, const SegmentPlan& sp,
                                                      const View<const S, 4>& initial, int threads) {
  using State = typename Scan::State;
  auto v = per_segment<State>(
      sp, threads, [&](index_t n, index_t s) { return sp.cut(n) && s + 1 < sp.segments(n); },
      [&](int worker, const WorkItem& it, index_t begin, index_t end) { return f.delta(worker, it, begin, end); });
  for (index_t n = 0; n < sp.seqs.size(); ++n)
    for (index_t h = 0; h < sp.heads && sp.cut(n); ++h)
      scan_starts(f, sp.plan[n], n, h, f.load(initial, n, h), v[n * sp.heads + h]);
  return v;
}

// The state gradient after every segment of the cut sequences (empty for the others).
template <class Scan, class S>
PerSegment<typename Scan::State> segment_end_dstates(const Scan& f, const SegmentPlan& sp,
                                                     const View<const S, 4>& d_final, int threads) {
  using State = typename Scan::State;
  auto v = per_segment<State>(
      sp, threads, [&](index_t n, index_t s) { return sp.cut(n) && s > 0; },
      [&](int worker, const WorkItem& it, index_t begin, index_t end) { return f.gamma(worker, it, begin, end); });
  for (index_t n = 0; n < sp.seqs.size(); ++n)
    for (index_t h = 0; h < sp.heads && sp.cut(n); ++h)
      scan_ends(f, sp.plan[n], n, h, f.load(d_final, n, h), v[n * sp.heads + h]);
  return v;
}

// The state head h of a work item starts from: its segment's scanned start (a segment of a cut
// sequence, the first one too when there is an initial state: the scan loaded it before the work
// items ran, so a final state written in place over it by the sequence's last segment cannot race
// with this read), else the caller's initial state, else none (false: the state is zero).
template <class State, class S, class Load>
bool item_start(const PerSegment<State>& starts, const SegmentPlan& sp, const WorkItem& it, index_t h,
                const View<const S, 4>& initial, State& out, Load&& load) {
  const auto& scanned = starts[it.seq * sp.heads + h];
  if (!sp.first(it) || (!scanned.empty() && initial.present())) {
    out = scanned[it.segment];
    return true;
  }
  if (initial.absent()) return false;
  load(initial, it.seq, h, out);
  return true;
}

// The mirror image: the state gradient after the item's segment (d_final after the last one).
template <class State, class S, class Load>
bool item_end(const PerSegment<State>& ends, const SegmentPlan& sp, const WorkItem& it, index_t h,
              const View<const S, 4>& d_final, State& out, Load&& load) {
  if (!sp.last(it)) {
    out = ends[it.seq * sp.heads + h][it.segment];
    return true;
  }
  if (d_final.absent()) return false;
  load(d_final, it.seq, h, out);
  return true;
}

}  // namespace lcsm::cpu::detail
