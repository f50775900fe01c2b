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
#include "lcsm/cpu/device.hpp"
#include "lcsm/cpu/gated_common.hpp"
#include "lcsm/cpu/gated_scalar.hpp"
#include "lcsm/cpu/gated_vector.hpp"
#include "lcsm/ops/gated.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {
namespace cpu::detail {

// The state before each segment s >= 1 of cut sequences, indexed [n * H + h][s] (see above).
template <class Kernel, class T, class S>
std::vector<std::vector<Matrix<S>>> gated_segment_starts(GatedWorkspacePool<S>& pool, const GatedProblem<T, S>& pb,
                                                         const Sequences& seqs, const std::vector<Boundaries>& plan,
                                                         const View<const S, 4>& initial, int threads) {
  const index_t H = pb.q.size(2);
  std::vector<std::vector<Matrix<S>>> starts(seqs.size() * H);
  const std::vector<WorkItem> todo = cut_segment_items(plan, H, 0, starts);
  if (todo.empty()) return starts;
  parallel_for(threads, static_cast<index_t>(todo.size()), [&](index_t i, int worker) {
    const WorkItem it = todo[i];
    Matrix<S> delta(pb.K, pb.V);
    bool zero = true;
    const index_t begin = plan[it.seq][it.segment], end = plan[it.seq][it.segment + 1];
    for (index_t t = begin; t < end; t += pb.C) {
      const index_t c = std::min(pb.C, end - t);
      const NextRows next{t + c, std::min(pb.C, end - t - c), it.head};
      Kernel::forward_block(pool[worker], pb, seqs[it.seq], it.head, t, c, delta, zero, true, View<T, 4>{}, next);
    }
    if (zero) delta.setZero();
    starts[it.seq * H + it.head][it.segment + 1] = std::move(delta);
  });
  for (index_t n = 0; n < seqs.size(); ++n)
    for (index_t h = 0; h < H && plan[n].size() > 2; ++h) {
      auto& st = starts[n * H + h];
      Matrix<S> running(pb.K, pb.V);
      if (initial.present()) load_state(initial, n, h, running);
      else running.setZero();
      for (std::size_t s = 1; s < st.size(); ++s) {
        decay_rows(running, total_gate(pb, seqs[n], h, plan[n][s - 1], plan[n][s]));
        running += st[s];
        st[s] = running;
      }
    }
  return starts;
}

// The state gradient after each segment but the last of cut sequences, indexed [n * H + h][s].
template <class Kernel, class T, class S>
std::vector<std::vector<Matrix<S>>> gated_segment_end_dstates(GatedWorkspacePool<S>& pool, const GatedProblem<T, S>& pb,
                                                              const View<const T, 4>& d_o, const Sequences& seqs,
                                                              const std::vector<Boundaries>& plan,
                                                              const View<const S, 4>& d_final, int threads) {
  const index_t H = pb.q.size(2);
  std::vector<std::vector<Matrix<S>>> d_ends(seqs.size() * H);
  const std::vector<WorkItem> todo = cut_segment_items(plan, H, 1, d_ends);
  if (todo.empty()) return d_ends;
  parallel_for(threads, static_cast<index_t>(todo.size()), [&](index_t i, int worker) {
    const WorkItem it = todo[i];
    Matrix<S> gamma(pb.K, pb.V);
    bool zero = true;
    const index_t begin = plan[it.seq][it.segment], end = plan[it.seq][it.segment + 1];
    const index_t blocks = (end - begin + pb.C - 1) / pb.C;
    for (index_t m = blocks - 1; m >= 0; --m) {
      const index_t t = begin + m * pb.C;
      Kernel::dk_block(pool[worker], pb, d_o, seqs[it.seq], it.head, t, std::min(pb.C, end - t), gamma, zero, true,
                       static_cast<const View<T, 4>*>(nullptr), static_cast<const View<T, 4>*>(nullptr), View<S, 4>{},
                       nullptr);
    }
    if (zero) gamma.setZero();
    d_ends[it.seq * H + it.head][it.segment - 1] = std::move(gamma);
  });
  for (index_t n = 0; n < seqs.size(); ++n)
    for (index_t h = 0; h < H && plan[n].size() > 2; ++h) {
      auto& de = d_ends[n * H + h];
      const index_t last = static_cast<index_t>(de.size()) - 1;
      Matrix<S> running(pb.K, pb.V);
      if (d_final.present()) load_state(d_final, n, h, running);
      else running.setZero();
      de[last] = running;
      for (index_t s = last - 1; s >= 0; --s) {
        decay_rows(running, total_gate(pb, seqs[n], h, plan[n][s + 1], plan[n][s + 2]));
        running += de[s];
        de[s] = running;
      }
    }
  return d_ends;
}

// The states a work item's heads start from: the segment's start, the initial state, or zero.
template <class S>
void initial_states(GatedWorkspace<S>& ws, const WorkItem& it, index_t H,
                    const std::vector<std::vector<Matrix<S>>>& starts, const View<const S, 4>& initial, bool* zero) {
  for (index_t g = 0; g < it.heads; ++g) {
    const index_t h = it.head + g;
    zero[g] = true;
    if (it.segment > 0) {
      ws.states[g] = starts[it.seq * H + h][it.segment];
      zero[g] = false;
    } else if (initial.present()) {
      load_state(initial, it.seq, h, ws.states[g]);
      zero[g] = false;
    }
  }
}

template <class Kernel, class T, class S>
void gated_forward(const cpu::Device& device, const GatedProblem<T, S>& pb, const lcsm::detail::ProblemShape& p,
                   const StateIO<S>& state, const CuSeqlens& cu, const View<T, 4>& o) {
  const Sequences seqs(p.batch, p.time, cu);
  const int threads = device.thread_count();
  const auto plan = plan_segments(seqs, p.heads, pb.C, threads);
  const auto items = work_items(plan, p.heads, head_group(seqs, plan, p.heads, threads));
  GatedWorkspacePool<S> pool(threads, pb.C, pb.K, pb.V, pb.gate_width());
  const auto starts = gated_segment_starts<Kernel>(pool, pb, seqs, plan, state.initial, threads);
  parallel_for(threads, static_cast<index_t>(items.size()), [&](index_t i, int worker) {
    const WorkItem it = items[i];
    GatedWorkspace<S>& ws = pool[worker];
    ws.ensure_states(it.heads, pb.K, pb.V);
    const bool want_state = it.segment + 2 == static_cast<index_t>(plan[it.seq].size()) && state.final.present();
    bool zero[kMaxGroup];
    initial_states(ws, it, p.heads, starts, state.initial, zero);
    const Sequence sq = seqs[it.seq];
    const index_t begin = plan[it.seq][it.segment], end = plan[it.seq][it.segment + 1];
    for (index_t t = begin; t < end; t += pb.C) {
      const index_t c = std::min(pb.C, end - t);
      const bool update = t + c < end || want_state;
      for (index_t g = 0; g < it.heads; ++g) {
        // Next: the same rows of the group's next head, or the first head's next rows.
        const NextRows next =
            g + 1 < it.heads ? NextRows{t, c, it.head + g + 1} : NextRows{t + c, std::min(pb.C, end - t - c), it.head};
        Kernel::forward_block(ws, pb, sq, it.head + g, t, c, ws.states[g], zero[g], update, o, next);
      }
    }
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
  const Sequences seqs(p.batch, p.time, cu);
  const int threads = device.thread_count();
  const auto plan = plan_segments(seqs, p.heads, pb.C, threads);
  const index_t group = head_group(seqs, plan, p.heads, threads), W = pb.gate_width();
  const auto items = work_items(plan, p.heads, group);
  GatedWorkspacePool<S> pool(threads, pb.C, pb.K, pb.V, W);
  const auto starts = gated_segment_starts<Kernel>(pool, pb, seqs, plan, states.initial, threads);
  const auto d_ends = gated_segment_end_dstates<Kernel>(pool, pb, d_o, seqs, plan, states.d_final, threads);
  std::vector<double> totals(items.size() * group * W, 0.0);  // the dg suffix sum over each item's tokens

  parallel_for(threads, static_cast<index_t>(items.size()), [&](index_t i, int worker) {
    const WorkItem it = items[i];
    GatedWorkspace<S>& ws = pool[worker];
    ws.ensure_states(2 * it.heads, pb.K, pb.V);
    const Sequence sq = seqs[it.seq];
    const index_t begin = plan[it.seq][it.segment], end = plan[it.seq][it.segment + 1];
    const bool first = it.segment == 0, last = it.segment + 2 == static_cast<index_t>(plan[it.seq].size());
    // dq, walking forwards from the states before the segment.
    bool zero[kMaxGroup], dzero[kMaxGroup];
    initial_states(ws, it, p.heads, starts, states.initial, zero);
    const bool want_final = last && states.d_final.present() && dg.present();
    for (index_t t = begin; t < end; t += pb.C) {
      const index_t c = std::min(pb.C, end - t);
      const bool update = t + c < end || want_final;
      for (index_t g = 0; g < it.heads; ++g)
        Kernel::dq_block(ws, pb, d_o, sq, it.head + g, t, c, ws.states[g], zero[g], update, dq, dg);
    }
    // dk, dv, walking backwards from the state gradients after the segment.
    double* acc = totals.data() + i * group * W;
    for (index_t g = 0; g < it.heads; ++g) {
      const index_t h = it.head + g;
      Matrix<S>& ds = ws.states[it.heads + g];
      dzero[g] = true;
      if (!last) {
        ds = d_ends[it.seq * p.heads + h][it.segment];
        dzero[g] = false;
      } else if (states.d_final.present()) {
        load_state(states.d_final, it.seq, h, ds);
        dzero[g] = false;
        if (want_final && !zero[g]) {  // sum_v dS_T (.) S_T: the final state's own dependence on the gates
          const Matrix<S>& sT = ws.states[g];
          for (index_t r = 0; r < pb.K; ++r)
            acc[g * W + (W == 1 ? 0 : r)] += static_cast<double>((ds.row(r).array() * sT.row(r).array()).sum());
        }
      }
    }
    const bool want_dinitial = first && states.d_initial.present();
    const index_t blocks = (end - begin + pb.C - 1) / pb.C;
    for (index_t m = blocks - 1; m >= 0; --m) {
      const index_t t = begin + m * pb.C, c = std::min(pb.C, end - t);
      for (index_t g = 0; g < it.heads; ++g)
        Kernel::dk_block(ws, pb, d_o, sq, it.head + g, t, c, ws.states[it.heads + g], dzero[g], m > 0 || want_dinitial,
                         &dk, &dv, dg, acc + g * W);
    }
    if (want_dinitial)
      for (index_t g = 0; g < it.heads; ++g) {
        if (dzero[g]) ws.states[it.heads + g].setZero();
        store_state(ws.states[it.heads + g], states.d_initial, it.seq, it.head + g);
      }
  });
  if (!dg.present()) return;
  // Cut sequences: every segment but the last adds the totals of the segments after it.
  std::vector<WorkItem> fix;
  std::vector<std::vector<double>> offsets;
  for (index_t n = 0; n < seqs.size(); ++n) {
    const index_t segments = static_cast<index_t>(plan[n].size()) - 1;
    if (segments < 2) continue;
    for (index_t h = 0; h < p.heads; ++h) {
      std::vector<double> running(W, 0.0);
      for (index_t s = segments - 1; s >= 0; --s) {
        if (s < segments - 1) {
          fix.push_back({n, h, s});
          offsets.push_back(running);
        }
        index_t idx = 0;  // the item (n, h, s): cut sequences run one head per item
        while (!(items[idx].seq == n && items[idx].head == h && items[idx].segment == s)) ++idx;
        for (index_t d = 0; d < W; ++d) running[d] += totals[idx * group * W + d];
      }
    }
  }
  parallel_for(threads, static_cast<index_t>(fix.size()), [&](index_t i, int) {
    const WorkItem it = fix[i];
    const Sequence sq = seqs[it.seq];
    for (index_t t = plan[it.seq][it.segment]; t < plan[it.seq][it.segment + 1]; ++t)
      for (index_t d = 0; d < W; ++d)
        dg(sq.batch, sq.start + t, it.head, d) =
            static_cast<S>(static_cast<double>(dg(sq.batch, sq.start + t, it.head, d)) + offsets[i][d]);
  });
}

// One decode token on columns [0, Wd) of a K x Wd strip of a state (row stride ld):
//   s_r = lambda_r s_r + k_r v,  out = sum_r q_r s_r, in one pass over the strip.
template <int Wd, class S>
void gated_decode_strip(S* s, index_t ld, index_t K, const S* q, const S* k, const S* v, const S* lambda, S* out) {
  S acc[Wd] = {}, vv[Wd];
  for (int c = 0; c < Wd; ++c) vv[c] = v[c];
  for (index_t r = 0; r < K; ++r) {
    S* row = s + r * ld;
    const S kr = k[r], qr = q[r], lr = lambda[r];
    for (int c = 0; c < Wd; ++c) {
      const S x = lr * row[c] + kr * vv[c];
      row[c] = x;
      acc[c] += qr * x;
    }
  }
  for (int c = 0; c < Wd; ++c) out[c] = acc[c];
}

template <class S>
void gated_decode_token(S* s, index_t ld, index_t K, index_t V, const S* q, const S* k, const S* v, const S* lambda,
                        S* out) {
  constexpr int Wd = 512 / static_cast<int>(sizeof(S));
  index_t c = 0;
  for (; c + Wd <= V; c += Wd) gated_decode_strip<Wd>(s + c, ld, K, q, k, v + c, lambda, out + c);
  for (; c + Wd / 4 <= V; c += Wd / 4) gated_decode_strip<Wd / 4>(s + c, ld, K, q, k, v + c, lambda, out + c);
  for (; c < V; ++c) gated_decode_strip<1>(s + c, ld, K, q, k, v + c, lambda, out + c);
}

// The recurrent form, token by token: advances state [B, H, K, V] in place by the n tokens.
template <class T, class S>
void gated_decode(const cpu::Device& device, const lcsm::detail::ProblemShape& p, const View<const T, 4>& q,
                  const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o, const View<S, 4>& state,
                  const View<const S, 4>& gate, double scale_d) {
  const index_t K = p.key_dim, V = p.value_dim, W = gate.size(3);
  const S scale = static_cast<S>(scale_d);
  const int threads =
      static_cast<int>(std::min<index_t>(device.thread_count(), std::max<index_t>(1, p.batch * p.heads * K * V >> 20)));
  parallel_for(threads, p.batch * p.heads, [&](index_t item, int) {
    const index_t b = item / p.heads, h = item % p.heads;
    Matrix<S> local;
    const bool direct = state.stride(3) == 1;
    if (!direct) {
      local.resize(K, V);
      load_state(View<const S, 4>(state), b, h, local);
    }
    S* s = direct ? &state(b, h, 0, 0) : local.data();
    const index_t ld = direct ? state.stride(2) : V;
    std::vector<S> buf(3 * K + 2 * V);
    S *qv = buf.data(), *kv = qv + K, *lam = kv + K, *vv = lam + K, *out = vv + V;
    for (index_t t = 0; t < p.time; ++t) {
      for (index_t d = 0; d < K; ++d) {
        qv[d] = scale * static_cast<S>(q(b, t, h, d));
        kv[d] = static_cast<S>(k(b, t, h, d));
        lam[d] = W == 1 && d > 0 ? lam[0] : static_cast<S>(std::exp(gate(b, t, h, W == 1 ? 0 : d)));
      }
      for (index_t c = 0; c < V; ++c) vv[c] = static_cast<S>(v(b, t, h, c));
      gated_decode_token(s, ld, K, V, qv, kv, vv, lam, out);
      for (index_t c = 0; c < V; ++c) o(b, t, h, c) = static_cast<T>(out[c]);
    }
    if (!direct) store_state(local, state, b, h);
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

// Validation and dispatch shared by the scalar and vector gates.
template <class Kernel, class Op, class T>
void forward_entry(const char* where, const cpu::Device& device, const Op& op, const View<const T, 4>& q,
                   const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o,
                   const StateIO<state_t<T>>& state, const CuSeqlens& cu, index_t sub) {
  const auto p = lcsm::detail::check_forward(where, q, k, v, o, state, cu);
  op.check(where, p.batch, p.time, p.heads, p.key_dim);
  lcsm::detail::check_disjoint(where, "o", o, "op.log_gate", op.log_gate);
  lcsm::detail::check_disjoint(where, "final_state", state.final, "op.log_gate", op.log_gate);
  gated_forward<Kernel>(device, gated_problem(op, q, k, v, p, sub), p, state, cu, o);
}

template <class Kernel, class Op, class T, class DG>
void backward_entry(const char* where, const cpu::Device& device, const Op& op, const View<const T, 4>& q,
                    const View<const T, 4>& k, const View<const T, 4>& v, const View<const T, 4>& d_o,
                    const View<T, 4>& dq, const View<T, 4>& dk, const View<T, 4>& dv,
                    const StateGrads<state_t<T>>& states, const DG& d_log_gate, const CuSeqlens& cu, index_t sub) {
  using lcsm::detail::check_disjoint;
  const auto p = lcsm::detail::check_backward(where, q, k, v, d_o, dq, dk, dv, states, cu);
  op.check(where, p.batch, p.time, p.heads, p.key_dim);
  check_disjoint(where, "dq", dq, "op.log_gate", op.log_gate);
  check_disjoint(where, "dk", dk, "op.log_gate", op.log_gate);
  check_disjoint(where, "dv", dv, "op.log_gate", op.log_gate);
  check_disjoint(where, "d_initial_state", states.d_initial, "op.log_gate", op.log_gate);
  if (d_log_gate.present()) {
    const char* n = "d_log_gate";
    lcsm::detail::check_output(where, n, d_log_gate);
    lcsm::detail::check_shape(
        where, n, d_log_gate, op.log_gate.shape(),
        DG::rank == 3 ? "[B, T, H], the shape of op.log_gate" : "[B, T, H, K], the shape of op.log_gate");
    check_disjoint(where, n, d_log_gate, "op.log_gate", op.log_gate);
    check_disjoint(where, n, d_log_gate, "q", q);
    check_disjoint(where, n, d_log_gate, "k", k);
    check_disjoint(where, n, d_log_gate, "v", v);
    check_disjoint(where, n, d_log_gate, "do", d_o);
    check_disjoint(where, n, d_log_gate, "dq", dq);
    check_disjoint(where, n, d_log_gate, "dk", dk);
    check_disjoint(where, n, d_log_gate, "dv", dv);
    check_disjoint(where, n, d_log_gate, "initial_state", states.initial);
    check_disjoint(where, n, d_log_gate, "d_final_state", states.d_final);
    check_disjoint(where, n, d_log_gate, "d_initial_state", states.d_initial);
  }
  gated_backward<Kernel>(device, gated_problem(op, q, k, v, p, sub), p, d_o, dq, dk, dv, states,
                         with_unit_key(d_log_gate), cu);
}

template <class Op, class T>
void step_entry(const char* where, const cpu::Device& device, const Op& op, const View<const T, 4>& q,
                const View<const T, 4>& k, const View<const T, 4>& v, const View<T, 4>& o,
                const View<state_t<T>, 4>& state) {
  const auto p = lcsm::detail::check_step(where, q, k, v, o, state);
  op.check(where, p.batch, p.time, p.heads, p.key_dim);
  lcsm::detail::check_disjoint(where, "o", o, "op.log_gate", op.log_gate);
  lcsm::detail::check_disjoint(where, "state", state, "op.log_gate", op.log_gate);
  gated_decode(device, p, q, k, v, o, state, with_unit_key(op.log_gate), op.scale_for(p.key_dim));
}

}  // namespace cpu::detail

// Forward: o from q, k, v and the op's gates, with optional initial/final states and cu_seqlens.
template <class T>
void forward(const cpu::Device& device, const ScalarGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<state_t<T>>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  cpu::detail::forward_entry<cpu::detail::ScalarGateKernel>("lcsm::forward(cpu, ScalarGatedAttention)", device, op, q,
                                                            k, v, o, state, cu_seqlens,
                                                            cpu::detail::causal_panel(op.chunk));
}
template <class T>
void forward(const cpu::Device& device, const VectorGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<state_t<T>>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  cpu::detail::forward_entry<cpu::detail::VectorGateKernel>("lcsm::forward(cpu, VectorGatedAttention)", device, op, q,
                                                            k, v, o, state, cu_seqlens, op.sub_chunk);
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
                                                             k, v, d_o, dq, dk, dv, states, d_log_gate, cu_seqlens,
                                                             cpu::detail::causal_panel(op.chunk));
}
template <class T>
void backward(const cpu::Device& device, const VectorGatedAttention<T>& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, detail::identity_t<View<T, 4>> dq,
              detail::identity_t<View<T, 4>> dk, detail::identity_t<View<T, 4>> dv,
              const StateGrads<state_t<T>>& states = {}, View<state_t<T>, 4> d_log_gate = {},
              const CuSeqlens& cu_seqlens = {}) {
  cpu::detail::backward_entry<cpu::detail::VectorGateKernel>("lcsm::backward(cpu, VectorGatedAttention)", device, op, q,
                                                             k, v, d_o, dq, dk, dv, states, d_log_gate, cu_seqlens,
                                                             op.sub_chunk);
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
