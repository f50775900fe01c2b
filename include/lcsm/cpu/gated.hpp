// The gated recurrences on the CPU: ScalarGatedAttention and VectorGatedAttention (ops/gated.hpp).
//
// Both run the chunked algorithm of lightning attention with the gate's factors in place of the
// constant decay's (block kernels in gated_scalar.hpp and gated_vector.hpp), over the same work
// items: (sequence, group of heads), and segments of a sequence when there are fewer (sequence,
// head) pairs than threads. A segment's state contribution from zero is computed first, in parallel,
// then combined in order: start[s + 1] = diag(e^{sum of g over segment s}) start[s] + delta[s]
// (backward: the mirror image for the state gradient).
//
// The gate's gradient: with q pre-scaled and G_t = sum_{r<=t} g_r, the outputs depend on the gates
// only through q_t e^{G_t} and k_t e^{-G_t} (and the final state through e^{G_T}), so
//   dG_t = q_t (.) dq_t - k_t (.) dk_t  (+ sum_v dS_T (.) S_T at t = T),   dg_t = sum_{s >= t} dG_s
// per sequence, head (and key for the vector gate; summed over keys for the scalar gate). The dq pass
// writes q (.) dq into d_log_gate, the dk pass (walking backwards) turns it into the suffix sums in
// double; a last pass adds the later segments' totals to the tokens of a cut sequence.
#pragma once

#include <cmath>
#include <vector>

#include "lcsm/core/dtype.hpp"
#include "lcsm/cpu/gated_common.hpp"
#include "lcsm/cpu/gated_scalar.hpp"
#include "lcsm/cpu/gated_vector.hpp"
#include "lcsm/ops/gated.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {
namespace cpu::detail {

// A gate as the segment scans see it (cpu/segment_scan.hpp): a segment decays a state by
// diag(e^{sum of its log-gates}); its contributions are the kernel's blocks from a zero state.
template <class Kernel, class T, class S>
struct GatedScan : MatrixScanState<S> {
  using State = Matrix<S>;
  WorkspacePool<GatedWorkspace<S>>& pool;
  const GatedProblem<T, S>& pb;
  const Sequences& seqs;
  const View<const T, 4>* d_o = nullptr;  // backward only

  State delta(int worker, const WorkItem& it, index_t begin, index_t end) const {
    State d(pb.K, pb.V);
    bool zero = true;
    walk_forward(begin, end, pb.C, it.head, 1, true, [&](index_t, index_t t, index_t c, bool, const NextRows& next) {
      Kernel::forward_block(pool[worker], pb, seqs[it.seq], it.head, t, c, d, zero, true, View<T, 4>{}, next);
    });
    if (zero) d.setZero();
    return d;
  }
  State gamma(int worker, const WorkItem& it, index_t begin, index_t end) const {
    State d(pb.K, pb.V);
    bool zero = true;
    walk_backward(begin, end, pb.C, it.head, 1, true, [&](index_t, index_t t, index_t c, bool, const NextRows&) {
      Kernel::dk_block(pool[worker], pb, *d_o, seqs[it.seq], it.head, t, c, d, zero, true,
                       static_cast<const View<T, 4>*>(nullptr), static_cast<const View<T, 4>*>(nullptr), View<S, 4>{},
                       nullptr);
    });
    if (zero) d.setZero();
    return d;
  }
  void decay(State& s, index_t n, index_t h, index_t begin, index_t end) const {
    decay_rows(s, total_gate(pb, seqs[n], h, begin, end));
  }
};

// The dg of a cut sequence's tokens is a suffix sum over the whole sequence: every segment but the
// last adds the totals of the segments after it (totals: per work item, W sums per head).
template <class S>
void add_later_segment_totals(int threads, const SegmentPlan& sp, index_t W, const std::vector<double>& totals,
                              const View<S, 4>& dg) {
  std::vector<WorkItem> fix;
  std::vector<std::vector<double>> offsets;
  for (index_t n = 0; n < sp.seqs.size(); ++n) {
    if (!sp.cut(n)) continue;
    for (index_t h = 0; h < sp.heads; ++h) {
      std::vector<double> running(W, 0.0);
      for (index_t s = sp.segments(n) - 1; s >= 0; --s) {
        if (s < sp.segments(n) - 1) {
          fix.push_back({n, h, s});
          offsets.push_back(running);
        }
        index_t idx = 0;  // the item (n, h, s): cut sequences run one head per item
        while (!(sp.items[idx].seq == n && sp.items[idx].head == h && sp.items[idx].segment == s)) ++idx;
        for (index_t d = 0; d < W; ++d) running[d] += totals[idx * sp.group * W + d];
      }
    }
  }
  parallel_for(threads, static_cast<index_t>(fix.size()), [&](index_t i, int) {
    const WorkItem it = fix[i];
    const Sequence sq = sp.seqs[it.seq];
    for (index_t t = sp.begin(it); t < sp.end(it); ++t)
      for (index_t d = 0; d < W; ++d)
        dg(sq.batch, sq.start + t, it.head, d) =
            static_cast<S>(static_cast<double>(dg(sq.batch, sq.start + t, it.head, d)) + offsets[i][d]);
  });
}

template <class Kernel, class T, class S>
void gated_forward(const cpu::Device& device, const GatedProblem<T, S>& pb, const lcsm::detail::ProblemShape& p,
                   const StateIO<S>& state, const CuSeqlens& cu, const View<T, 4>& o) {
  if (p.time == 0 && state.final.absent()) return;  // no tokens and no state: nothing to plan
  const int threads = device.thread_count();
  const SegmentPlan sp(Sequences(p.batch, p.time, cu), p.heads, pb.C, threads);
  WorkspacePool<GatedWorkspace<S>> pool(threads, pb.C, pb.K, pb.V, pb.gate_width());
  const auto starts =
      segment_start_states(GatedScan<Kernel, T, S>{{pb.K, pb.V}, pool, pb, sp.seqs}, sp, state.initial, threads);
  parallel_for(threads, static_cast<index_t>(sp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = sp.items[i];
    GatedWorkspace<S>& ws = pool[worker];
    ws.ensure_states(it.heads, pb.K, pb.V);
    const bool want_state = sp.last(it) && state.final.present();
    bool zero[kMaxGroup];
    for (index_t g = 0; g < it.heads; ++g)
      zero[g] = !item_start(starts, sp, it, it.head + g, state.initial, ws.states[g], load_state<S>);
    const Sequence sq = sp.seqs[it.seq];
    walk_forward(sp.begin(it), sp.end(it), pb.C, it.head, it.heads, want_state,
                 [&](index_t g, index_t t, index_t c, bool update, const NextRows& next) {
                   Kernel::forward_block(ws, pb, sq, it.head + g, t, c, ws.states[g], zero[g], update, o, next);
                 });
    if (want_state)
      for (index_t g = 0; g < it.heads; ++g) {
        if (zero[g]) ws.states[g].setZero();
        store_state(ws.states[g], state.final, it.seq, it.head + g);
      }
  });
}

template <class Kernel, class T, class S>
void gated_backward(const cpu::Device& device, const GatedProblem<T, S>& pb, const lcsm::detail::ProblemShape& p,
                    const View<const T, 4>& d_o, const View<T, 4>& dq, const View<T, 4>& dk, const View<T, 4>& dv,
                    const StateGrads<S>& states, const View<S, 4>& dg, const CuSeqlens& cu) {
  if (p.time == 0 && states.d_initial.absent()) return;  // no tokens and no state gradient: nothing to plan
  const int threads = device.thread_count();
  const SegmentPlan sp(Sequences(p.batch, p.time, cu), p.heads, pb.C, threads);
  const index_t group = sp.group, W = pb.gate_width();
  WorkspacePool<GatedWorkspace<S>> pool(threads, pb.C, pb.K, pb.V, W);
  const GatedScan<Kernel, T, S> scan{{pb.K, pb.V}, pool, pb, sp.seqs, &d_o};
  const auto starts = segment_start_states(scan, sp, states.initial, threads);
  const auto d_ends = segment_end_dstates(scan, sp, states.d_final, threads);
  std::vector<double> totals(sp.items.size() * group * W, 0.0);  // the dg suffix sum over each item's tokens

  parallel_for(threads, static_cast<index_t>(sp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = sp.items[i];
    GatedWorkspace<S>& ws = pool[worker];
    ws.ensure_states(2 * it.heads, pb.K, pb.V);
    const Sequence sq = sp.seqs[it.seq];
    // dq, walking forwards from the states before the segment.
    bool zero[kMaxGroup], dzero[kMaxGroup];
    for (index_t g = 0; g < it.heads; ++g)
      zero[g] = !item_start(starts, sp, it, it.head + g, states.initial, ws.states[g], load_state<S>);
    const bool want_final = sp.last(it) && states.d_final.present() && dg.present();
    walk_forward(sp.begin(it), sp.end(it), pb.C, it.head, it.heads, want_final,
                 [&](index_t g, index_t t, index_t c, bool update, const NextRows&) {
                   Kernel::dq_block(ws, pb, d_o, sq, it.head + g, t, c, ws.states[g], zero[g], update, dq, dg);
                 });
    // dk, dv, walking backwards from the state gradients after the segment.
    double* acc = totals.data() + i * group * W;
    for (index_t g = 0; g < it.heads; ++g) {
      Matrix<S>& ds = ws.states[it.heads + g];
      dzero[g] = !item_end(d_ends, sp, it, it.head + g, states.d_final, ds, load_state<S>);
      if (want_final && !zero[g]) {  // sum_v dS_T (.) S_T: the final state's own dependence on the gates
        const Matrix<S>& sT = ws.states[g];
        for (index_t r = 0; r < pb.K; ++r)
          acc[g * W + (W == 1 ? 0 : r)] += static_cast<double>((ds.row(r).array() * sT.row(r).array()).sum());
      }
    }
    const bool want_dinitial = sp.first(it) && states.d_initial.present();
    walk_backward(sp.begin(it), sp.end(it), pb.C, it.head, it.heads, want_dinitial,
                  [&](index_t g, index_t t, index_t c, bool update, const NextRows&) {
                    Kernel::dk_block(ws, pb, d_o, sq, it.head + g, t, c, ws.states[it.heads + g], dzero[g], update, &dk,
                                     &dv, dg, acc + g * W);
                  });
    if (want_dinitial)
      for (index_t g = 0; g < it.heads; ++g) {
        if (dzero[g]) ws.states[it.heads + g].setZero();
        store_state(ws.states[it.heads + g], states.d_initial, it.seq, it.head + g);
      }
  });
  if (!dg.present()) return;
  add_later_segment_totals(threads, sp, W, totals, dg);
}

// The recurrent form, token by token: advances state [B, H, K, V] in place by the n tokens.
template <class T, class S>
void gated_decode(const cpu::Device& device, const lcsm::detail::ProblemShape& p, const View<const T, 4>& q,
                  const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o, const View<S, 4>& state,
                  const View<const S, 4>& gate, double scale_d) {
  const index_t K = p.key_dim, V = p.value_dim, W = gate.size(3);
  const S scale = static_cast<S>(scale_d);
  for_each_state_slice(device, state, [&](index_t b, index_t h, S* s, index_t ld) {
    std::vector<S> buf(3 * K + 2 * V);
    S *qv = buf.data(), *kv = qv + K, *lam = kv + K, *vv = lam + K, *out = vv + V;
    for (index_t t = 0; t < p.time; ++t) {
      for (index_t d = 0; d < K; ++d) {
        qv[d] = scale * static_cast<S>(q(b, t, h, d));
        kv[d] = static_cast<S>(k(b, t, h, d));
        lam[d] = W == 1 && d > 0 ? lam[0] : static_cast<S>(std::exp(gate(b, t, h, W == 1 ? 0 : d)));
      }
      for (index_t c = 0; c < V; ++c) vv[c] = static_cast<S>(v(b, t, h, c));
      decode_token(s, ld, K, V, qv, kv, vv, RowDecay<S>{lam}, out);
      for (index_t c = 0; c < V; ++c) o(b, t, h, c) = static_cast<T>(out[c]);
    }
  });
}

// A [B, T, H] view as [B, T, H, 1].
template <class G>
View<G, 4> with_unit_key(const View<G, 3>& g) {
  return {g.data(), {g.size(0), g.size(1), g.size(2), 1}, {g.stride(0), g.stride(1), g.stride(2), 1}};
}
template <class G>
View<G, 4> with_unit_key(const View<G, 4>& g) {
  return g;
}

template <class T, class Op>
GatedProblem<T, state_t<T>> gated_problem(const Op& op, const View<const T, 4>& q, const View<const T, 4>& k,
                                          const View<const T, 4>& v, const lcsm::detail::ProblemShape& p, index_t sub) {
  return {q, k, v, with_unit_key(op.log_gate), p.key_dim, p.value_dim, op.chunk, sub, op.scale_for(p.key_dim)};
}

// The panel height of the causal products: the scalar gate's lightning-like panels, the vector gate's
// sub-chunks (after op.check: chunk and sub_chunk are in range).
template <class T>
index_t panel_of(const ScalarGatedAttention<T>& op) {
  return causal_panel(op.chunk);
}
template <class T>
index_t panel_of(const VectorGatedAttention<T>& op) {
  return op.sub_chunk;
}

// Validation and dispatch shared by the scalar and vector gates. The gate is an input of every call
// (its values are read by op.check), d_log_gate an output of backward.
template <class Kernel, class Op, class T>
void forward_entry(const char* where, const cpu::Device& device, const Op& op, const View<const T, 4>& q,
                   const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o,
                   const StateIO<state_t<T>>& state, const CuSeqlens& cu) {
  lcsm::detail::Operands ops(where);
  ops.in("op.log_gate", op.log_gate);
  const auto p = lcsm::detail::check_forward(where, q, k, v, o, state, cu, ops);
  op.check(where, p.batch, p.time, p.heads, p.key_dim);
  gated_forward<Kernel>(device, gated_problem(op, q, k, v, p, panel_of(op)), p, state, cu, o);
}

template <class Kernel, class Op, class T, class DG>
void backward_entry(const char* where, const cpu::Device& device, const Op& op, const View<const T, 4>& q,
                    const View<const T, 4>& k, const View<const T, 4>& v, const View<const T, 4>& d_o,
                    const View<T, 4>& dq, const View<T, 4>& dk, const View<T, 4>& dv,
                    const StateGrads<state_t<T>>& states, const DG& d_log_gate, const CuSeqlens& cu) {
  lcsm::detail::Operands ops(where);
  ops.in("op.log_gate", op.log_gate).out("d_log_gate", d_log_gate);
  const auto p = lcsm::detail::check_backward(where, q, k, v, d_o, dq, dk, dv, states, cu, ops);
  op.check(where, p.batch, p.time, p.heads, p.key_dim);
  if (d_log_gate.present())
    lcsm::detail::check_shape(
        where, "d_log_gate", d_log_gate, op.log_gate.shape(),
        DG::rank == 3 ? "[B, T, H], the shape of op.log_gate" : "[B, T, H, K], the shape of op.log_gate");
  gated_backward<Kernel>(device, gated_problem(op, q, k, v, p, panel_of(op)), p, d_o, dq, dk, dv, states,
                         with_unit_key(d_log_gate), cu);
}

template <class Op, class T>
void step_entry(const char* where, const cpu::Device& device, const Op& op, const View<const T, 4>& q,
                const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o,
                const View<state_t<T>, 4>& state) {
  lcsm::detail::Operands ops(where);
  ops.in("op.log_gate", op.log_gate);
  const auto p = lcsm::detail::check_step(where, q, k, v, o, state, ops);
  op.check(where, p.batch, p.time, p.heads, p.key_dim);
  gated_decode(device, p, q, k, v, o, state, with_unit_key(op.log_gate), op.scale_for(p.key_dim));
}

}  // namespace cpu::detail

// Forward: o from q, k, v and the op's gates, with optional initial/final states and cu_seqlens.
template <class T>
void forward(const cpu::Device& device, const ScalarGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<state_t<T>>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  cpu::detail::forward_entry<cpu::detail::ScalarGateKernel>("lcsm::forward(cpu, ScalarGatedAttention)", device, op, q,
                                                            k, v, o, state, cu_seqlens);
}
template <class T>
void forward(const cpu::Device& device, const VectorGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<state_t<T>>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  cpu::detail::forward_entry<cpu::detail::VectorGateKernel>("lcsm::forward(cpu, VectorGatedAttention)", device, op, q,
                                                            k, v, o, state, cu_seqlens);
}

// Backward: dq, dk, dv from do; optionally d initial state (from d final state) and the gradient of
// every gate, d_log_gate, in the gate's shape.
template <class T>
void backward(const cpu::Device& device, const ScalarGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, detail::identity_t<View<T, 4>> dq,
              detail::identity_t<View<T, 4>> dk, detail::identity_t<View<T, 4>> dv,
              const StateGrads<state_t<T>>& states = {}, View<state_t<T>, 3> d_log_gate = {},
              const CuSeqlens& cu_seqlens = {}) {
  cpu::detail::backward_entry<cpu::detail::ScalarGateKernel>("lcsm::backward(cpu, ScalarGatedAttention)", device, op, q,
                                                             k, v, d_o, dq, dk, dv, states, d_log_gate, cu_seqlens);
}
template <class T>
void backward(const cpu::Device& device, const VectorGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, detail::identity_t<View<T, 4>> dq,
              detail::identity_t<View<T, 4>> dk, detail::identity_t<View<T, 4>> dv,
              const StateGrads<state_t<T>>& states = {}, View<state_t<T>, 4> d_log_gate = {},
              const CuSeqlens& cu_seqlens = {}) {
  cpu::detail::backward_entry<cpu::detail::VectorGateKernel>("lcsm::backward(cpu, VectorGatedAttention)", device, op, q,
                                                             k, v, d_o, dq, dk, dv, states, d_log_gate, cu_seqlens);
}

// Decode: advances state [B, H, K, V] in place by the n tokens of q, k [B, n, H, K], v [B, n, H, V]
// with the op's gates for those tokens ([B, n, H] or [B, n, H, K]); writes o [B, n, H, V].
template <class T>
void step(const cpu::Device& device, const ScalarGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<state_t<T>, 4> state) {
  cpu::detail::step_entry("lcsm::step(cpu, ScalarGatedAttention)", device, op, q, k, v, o, state);
}
template <class T>
void step(const cpu::Device& device, const VectorGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<state_t<T>, 4> state) {
  cpu::detail::step_entry("lcsm::step(cpu, VectorGatedAttention)", device, op, q, k, v, o, state);
}

}  // namespace lcsm
