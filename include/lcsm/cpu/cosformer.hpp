// cosFormer on the CPU: lightning's block algorithm with the cos re-weighting as the causal mask.
//
// Per (sequence, head), blocks of C tokens; a = phi(q), b = phi(k) (C x K), cs, sn the cos and sin
// of each token's angle pi p / 2M, and the expanded features u = [a cs, a sn], w = [b cs, b sn]
// (C x 2K). S (2K x V) and z (2K) are the state before the block. Since
// w_ij = cos(pi (p_i - p_j) / 2M) depends on i - j only, it is a Toeplitz mask exactly like
// lightning's decay, and the intra-block scores need only the K features:
//   A    = (a b^T) (.) W,             W_ij = cos(pi (i - j) / 2M) for i >= j, else 0
//   num  = A v + u S,   den = rowsum(A) + u z,   o = num / max(den, eps)
//   S   += w^T v,       z  += w^T 1
// Backward: g = do / max(den, eps), e = -(do . o) / max(den, eps) (0 where the clamp is active), the
// gradients of num and den; P = (g v^T + e 1^T) (.) W:
//   da = P b + cs (.) (g S^T + e z^T)_cos + sn (.) (g S^T + e z^T)_sin,   dq = phi'(q) (.) da
//   db = P^T a + cs (.) (v dS^T + 1 dz^T)_cos + sn (.) (..)_sin,           dk = phi'(k) (.) db
//   dv = A^T g + w dS,   dS += u^T g,   dz += u^T e     (dS, dz: the gradient of the state after the block)
// The dq pass walks blocks forwards (it needs S and computes g, e, kept in a [B, T, H, V + 1]
// buffer), the dk, dv pass backwards. Non-causal: the whole sequence's S, z first, then
// o = u S / max(u z, eps) block by block. Work runs over (sequence, group of heads, segment) items of
// the chunked engine (cpu/chunked.hpp); segments of one sequence combine their state sums in order
// (its scan with no decay). Block kernels: cpu/cosformer_blocks.hpp, cpu/cosformer_backward_blocks.hpp.
#pragma once

#include <cmath>
#include <vector>

#include "lcsm/core/dtype.hpp"
#include "lcsm/cpu/chunked.hpp"
#include "lcsm/cpu/cosformer_backward_blocks.hpp"
#include "lcsm/cpu/cosformer_blocks.hpp"
#include "lcsm/ops/cosformer.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {
namespace cpu::detail {

// The sequences whose positions check_positions walks: all of them, except in a call without tokens
// and without positions, where there is nothing to check and N is bounded by no view's memory.
inline index_t checked_sequences(const CosFormerAttention& op, const lcsm::detail::ProblemShape& p,
                                 const Sequences& seqs) {
  return p.time == 0 && op.positions.absent() ? 0 : seqs.size();
}

// What every entry point sets up: the chunked engine's plan, and each sequence's position and M.
struct CosformerPlan : SegmentPlan {
  std::vector<CosformerSequence> where;
  CosformerPlan(const CosFormerAttention& op, const lcsm::detail::ProblemShape& p, const CuSeqlens& cu, int threads)
      : SegmentPlan(Sequences(p.batch, p.time, cu), p.heads, op.chunk, threads) {
    for (index_t n = 0; n < seqs.size(); ++n) {
      const index_t first = op.position_of(n);
      where.push_back({first, op.length_for(first, seqs[n].length)});
    }
  }
};

// cosFormer as the segment scans see it (cpu/segment_scan.hpp): no decay, a segment's contribution
// its sums S = sum w^T v, z = sum w^T 1.
template <class T, class S>
struct CosScan {
  using State = CosState<S>;
  WorkspacePool<CosformerWorkspace<S>>& pool;
  const CosformerProblem<T>& pb;
  const CosformerPlan& cp;

  State load(const View<const S, 4>& x, index_t n, index_t h) const {
    State s(2 * pb.K, pb.V);
    if (x.present()) s.load(x, n, h);
    else s.set_zero();
    return s;
  }
  State delta(int worker, const WorkItem& it, index_t begin, index_t end) const {
    State out(2 * pb.K, pb.V);
    cos_delta(pool[worker], pb, cp.where[it.seq], cp.seqs[it.seq], it.head, begin, end, out);
    return out;
  }
  void decay(State&, index_t, index_t, index_t, index_t) const {}
  void add(State& s, const State& d) const { s.add(d); }
};

// The state before every segment: causal, the scan over the cut sequences; non-causal, for every
// sequence, the initial state plus the whole sequence's sums, the same for all its segments.
template <class T, class S>
PerSegment<CosState<S>> cos_start_states(const CosScan<T, S>& scan, const CosformerPlan& cp,
                                         const View<const S, 4>& initial, int threads, bool causal) {
  if (causal) return segment_start_states(scan, cp, initial, threads);
  auto sums = per_segment<CosState<S>>(
      cp, threads, [](index_t, index_t) { return true; },
      [&](int worker, const WorkItem& it, index_t begin, index_t end) { return scan.delta(worker, it, begin, end); });
  for (index_t n = 0; n < cp.seqs.size(); ++n)
    for (index_t h = 0; h < cp.heads; ++h) {
      CosState<S> whole = scan.load(initial, n, h);
      auto& v = sums[n * cp.heads + h];
      for (const auto& s : v) whole.add(s);
      for (auto& s : v) s = whole;
    }
  return sums;
}

// The state head h of a work item starts from: its entry in `starts` where there is one, else the
// initial state, else zero.
template <class S>
void cos_item_start(const PerSegment<CosState<S>>& starts, const CosformerPlan& cp, const WorkItem& it, index_t h,
                    const View<const S, 4>& initial, CosState<S>& st) {
  const auto& pre = starts[it.seq * cp.heads + h];
  if (!pre.empty()) st = pre[it.segment];
  else if (initial.present()) st.load(initial, it.seq, h);
  else st.set_zero();
}

}  // namespace cpu::detail

// Forward: o = cosFormer(q, k, v) with optional [N, H, 2K, V + 1] initial/final states and cu_seqlens.
template <class T>
void forward(const cpu::Device& device, const CosFormerAttention& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<state_t<T>>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  using S = state_t<T>;
  using namespace cpu::detail;
  const char* where = "lcsm::forward(cpu, CosFormerAttention)";
  lcsm::detail::Operands ops(where);
  ops.in("op.positions", op.positions);
  const auto p =
      lcsm::detail::check_forward(where, q, k, v, o, state, cu_seqlens, ops, lcsm::detail::StateLayout::cosformer);
  op.check(where);
  const Sequences seqs(p.batch, p.time, cu_seqlens);
  op.check_positions(
      where, checked_sequences(op, p, seqs), [&](index_t n) { return seqs[n].length; }, false);
  if (p.time == 0 && state.final.absent()) return;  // no tokens and no state: nothing to plan
  const int threads = device.thread_count();
  const CosformerPlan cp(op, p, cu_seqlens, threads);
  const CosformerProblem<T> pb{
      q, k, v, p.key_dim, p.value_dim, op.chunk, op.feature_map == CosFormerAttention::FeatureMap::relu, op.eps};
  WorkspacePool<CosformerWorkspace<S>> pool(threads, op.chunk, p.key_dim, p.value_dim);
  const auto starts = cos_start_states(CosScan<T, S>{pool, pb, cp}, cp, state.initial, threads, op.causal);

  cpu::parallel_for(threads, static_cast<index_t>(cp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = cp.items[i];
    CosformerWorkspace<S>& ws = pool[worker];
    ws.ensure_states(it.heads);
    const bool want_state = cp.last(it) && state.final.present();
    const Decay<S> mask = cos_mask<S>(cp.where[it.seq].M, op.chunk);
    for (index_t g = 0; g < it.heads; ++g) cos_item_start(starts, cp, it, it.head + g, state.initial, ws.states[g]);
    const Sequence sq = cp.seqs[it.seq];
    walk_forward(cp.begin(it), cp.end(it), op.chunk, it.head, it.heads, want_state,
                 [&](index_t g, index_t t, index_t c, bool update, const NextRows& next) {
                   if (g == 0) block_angles(cp.where[it.seq], t, c, ws.cs, ws.sn);
                   if (op.causal) cos_forward_block(ws, pb, mask, ws.states[g], sq, t, c, it.head + g, update, o, next);
                   else cos_bidirectional_block(ws, pb, ws.states[g], sq, t, c, it.head + g, o);
                 });
    if (want_state)
      for (index_t g = 0; g < it.heads; ++g) ws.states[g].store(state.final, it.seq, it.head + g);
  });
}

// Backward: dq, dk, dv from do; optionally the gradient of the [N, H, 2K, V + 1] initial state
// (from that of the final state). cosFormer has no parameters of its own.
template <class T>
void backward(const cpu::Device& device, const CosFormerAttention& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, View<T, 4> dq, detail::identity_t<View<T, 4>> dk,
              detail::identity_t<View<T, 4>> dv, const StateGrads<state_t<T>>& states = {},
              const CuSeqlens& cu_seqlens = {}) {
  using S = state_t<T>;
  using namespace cpu::detail;
  const char* where = "lcsm::backward(cpu, CosFormerAttention)";
  lcsm::detail::Operands ops(where);
  ops.in("op.positions", op.positions);
  const auto p = lcsm::detail::check_backward(where, q, k, v, d_o, dq, dk, dv, states, cu_seqlens, ops,
                                              lcsm::detail::StateLayout::cosformer);
  op.check(where);
  const Sequences seqs(p.batch, p.time, cu_seqlens);
  op.check_positions(
      where, checked_sequences(op, p, seqs), [&](index_t n) { return seqs[n].length; }, false);
  if (p.time == 0 && states.d_initial.absent()) return;  // no tokens and no state gradient: nothing to plan
  const int threads = device.thread_count();
  const CosformerPlan cp(op, p, cu_seqlens, threads);
  const CosformerProblem<T> pb{
      q, k, v, p.key_dim, p.value_dim, op.chunk, op.feature_map == CosFormerAttention::FeatureMap::relu, op.eps};
  const index_t H = p.heads, K2 = 2 * p.key_dim, V = p.value_dim;
  WorkspacePool<CosformerWorkspace<S>> pool(threads, op.chunk, p.key_dim, V);
  const CosScan<T, S> scan{pool, pb, cp};
  const auto starts = cos_start_states(scan, cp, states.initial, threads, op.causal);
  // g and e for the backward walk (causal only).
  std::vector<S> ge_store(op.causal ? static_cast<std::size_t>(p.batch * p.time * H * (V + 1)) : 0);
  const View<S, 4> ge = lcsm::view(ge_store.data(), {p.batch, p.time, H, V + 1});
  // u^T [g, e] per segment: needed for every segment but the first of cut sequences (causal), for
  // all (non-causal: the whole sequence's state gradient).
  auto wants_gamma = [&](index_t n, index_t s) { return !op.causal || (cp.cut(n) && s > 0); };
  PerSegment<CosState<S>> d_after(cp.seqs.size() * H);  // gammas first, then the scanned state gradients
  for (index_t n = 0; n < cp.seqs.size(); ++n)
    for (index_t h = 0; h < H; ++h) d_after[n * H + h].assign(cp.segments(n), CosState<S>(K2, V));

  // Forward walk: dq, g and e, and the segments' u^T [g, e].
  cpu::parallel_for(threads, static_cast<index_t>(cp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = cp.items[i];
    CosformerWorkspace<S>& ws = pool[worker];
    ws.ensure_states(it.heads);
    for (index_t g = 0; g < it.heads; ++g) cos_item_start(starts, cp, it, it.head + g, states.initial, ws.states[g]);
    const Decay<S> mask = cos_mask<S>(cp.where[it.seq].M, op.chunk);
    const Sequence sq = cp.seqs[it.seq];
    const bool gamma = wants_gamma(it.seq, it.segment);
    for (index_t g = 0; g < it.heads && gamma; ++g) d_after[it.seq * H + it.head + g][it.segment].set_zero();
    walk_forward(cp.begin(it), cp.end(it), op.chunk, it.head, it.heads, false,
                 [&](index_t g, index_t t, index_t c, bool update, const NextRows&) {
                   if (g == 0) block_angles(cp.where[it.seq], t, c, ws.cs, ws.sn);
                   cos_backward_queries_block(ws, pb, op.causal, mask, ws.states[g],
                                              gamma ? &d_after[it.seq * H + it.head + g][it.segment] : nullptr, sq, t,
                                              c, it.head + g, update, d_o, dq, ge);
                 });
  });
  // The state gradient after each segment: d_final, plus the u^T [g, e] of every later segment
  // (non-causal: of every segment).
  for (index_t n = 0; n < cp.seqs.size(); ++n)
    for (index_t h = 0; h < H; ++h) {
      CosState<S> running = scan.load(states.d_final, n, h);
      auto& v = d_after[n * H + h];
      if (op.causal) {
        scan_ends(scan, cp.plan[n], n, h, std::move(running), v);
        continue;
      }
      for (const auto& x : v) running.add(x);
      for (auto& x : v) x = running;
    }
  // Backward walk: dk, dv, and the initial state's gradient.
  cpu::parallel_for(threads, static_cast<index_t>(cp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = cp.items[i];
    CosformerWorkspace<S>& ws = pool[worker];
    ws.ensure_states(it.heads);
    for (index_t g = 0; g < it.heads; ++g) ws.states[g] = d_after[it.seq * H + it.head + g][it.segment];
    const Decay<S> mask = cos_mask<S>(cp.where[it.seq].M, op.chunk);
    const Sequence sq = cp.seqs[it.seq];
    const bool want_dinitial = cp.first(it) && states.d_initial.present();
    walk_backward(cp.begin(it), cp.end(it), op.chunk, it.head, it.heads, want_dinitial,
                  [&](index_t g, index_t t, index_t c, bool update, const NextRows&) {
                    if (g == 0) block_angles(cp.where[it.seq], t, c, ws.cs, ws.sn);
                    cos_backward_keys_block(ws, pb, op.causal, mask, ws.states[g], sq, t, c, it.head + g, update, ge,
                                            dk, dv);
                  });
    if (want_dinitial)
      for (index_t g = 0; g < it.heads; ++g) ws.states[g].store(states.d_initial, it.seq, it.head + g);
  });
}

// Decode: advances state [B, H, 2K, V + 1] in place by the n tokens of q, k [B, n, H, K],
// v [B, n, H, V], writing o [B, n, H, V]. Causal only; op.length (M) and op.positions ([B], the
// position of each sequence's first decode token) are required, and positions + n <= M.
template <class T>
void step(const cpu::Device& device, const CosFormerAttention& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<state_t<T>, 4> state) {
  using S = state_t<T>;
  using namespace cpu::detail;
  const char* where = "lcsm::step(cpu, CosFormerAttention)";
  lcsm::detail::Operands ops(where);
  ops.in("op.positions", op.positions);
  const auto p = lcsm::detail::check_step(where, q, k, v, o, state, ops, lcsm::detail::StateLayout::cosformer);
  op.check(where);
  lcsm::detail::check_argument(op.causal, where, "op.causal", "causal = true (decode is causal)", "false");
  lcsm::detail::check_argument(op.length.has_value(), where, "op.length",
                               "a fixed M for decode (the weights depend on it)", "unset");
  op.check_positions(
      where, p.batch, [&](index_t) { return p.time; }, true);
  const index_t K = p.key_dim, K2 = 2 * K, V = p.value_dim;
  const S eps = static_cast<S>(op.eps);
  const bool relu = op.feature_map == CosFormerAttention::FeatureMap::relu;
  const double f = 3.14159265358979323846 / (2.0 * static_cast<double>(*op.length));
  for_each_state_slice(device, state, [&](index_t b, index_t h, S* s, index_t ld) {
    std::vector<S> buf(2 * K2 + 2 * V);
    S *u = buf.data(), *w = u + K2, *vv = w + K2, *out = vv + V;
    for (index_t t = 0; t < p.time; ++t) {
      const double ang = f * static_cast<double>(op.positions(b) + t);
      const S cs = static_cast<S>(std::cos(ang)), sn = static_cast<S>(std::sin(ang));
      for (index_t d = 0; d < K; ++d) {
        const S a = cos_phi(relu, static_cast<S>(q(b, t, h, d))), bk = cos_phi(relu, static_cast<S>(k(b, t, h, d)));
        u[d] = a * cs;
        u[K + d] = a * sn;
        w[d] = bk * cs;
        w[K + d] = bk * sn;
      }
      for (index_t c = 0; c < V; ++c) vv[c] = static_cast<S>(v(b, t, h, c));
      decode_token(s, ld, K2, V, u, w, vv, SameDecay<S>{S(1)}, out);
      S den = 0;
      for (index_t r = 0; r < K2; ++r) {
        S& z = s[r * ld + V];
        z += w[r];
        den += u[r] * z;
      }
      const S inv = S(1) / (den < eps ? eps : den);
      for (index_t c = 0; c < V; ++c) o(b, t, h, c) = static_cast<T>(out[c] * inv);
    }
  });
}

}  // namespace lcsm
