// Lightning attention on the CPU: the block algorithm of Lightning Attention-2 on Eigen matrices.
//
// Per (sequence, head), blocks of C tokens; S is the state before the block, lambda = exp(g), i and
// j count from 1 inside the block of c <= C tokens, q is pre-multiplied by the scale:
//   O  = [(Q K^T) (.) D] V + diag(lambda^i) Q S,    D_ij = lambda^(i-j) if i >= j else 0
//   S' = lambda^c S + (diag(lambda^(c-j)) K)^T V
// Backward, with dS' the gradient of the state after the block:
//   dQ = [(dO V^T) (.) D] K + diag(lambda^i) dO S^T
//   dK = [(dO V^T) (.) D]^T Q + diag(lambda^(c-j)) V dS'^T
//   dV = [(Q K^T) (.) D]^T dO + diag(lambda^(c-j)) K dS'
//   dS = lambda^c dS' + (diag(lambda^i) Q)^T dO
//   dg = sum_t t (q_t . dq_t - k_t . dk_t) + T <dS_T, S_T>     (t from 1 in each sequence)
// Work runs over (sequence, head) pairs, and over segments of a sequence when there are fewer pairs
// than threads: each segment's state contribution is computed first, then combined in order.
#pragma once

#include <cmath>
#include <memory>
#include <vector>

#include "lcsm/core/dtype.hpp"
#include "lcsm/cpu/chunked.hpp"
#include "lcsm/cpu/device.hpp"
#include "lcsm/ops/lightning.hpp"
#include "lcsm/ops/problem.hpp"

namespace lcsm {
namespace cpu::detail {

template <class T>
struct LightningProblem {
  View<const T, 4> q, k, v;
  index_t K, V, C;
  double scale;
  const std::vector<double>* log_decay;
};

template <class S>
struct LightningWorkspace {
  Matrix<S> q, k, v, o, d_o, a, p, tmp_k, tmp_v, dq, dk, dv, state, dstate;
  LightningWorkspace(index_t C, index_t K, index_t V)
      : q(C, K), k(C, K), v(C, V), o(C, V), d_o(C, V), a(C, C), p(C, C), tmp_k(C, K), tmp_v(C, V), dq(C, K), dk(C, K),
        dv(C, V), state(K, V), dstate(K, V) {}
};

// The state contribution of tokens [begin, end) starting from zero: sum_j lambda^(L-j) k_j v_j^T.
template <class T, class S>
void state_delta(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, const Vector<S>& pw, bool decayed,
                 const Sequence& sq, index_t h, index_t begin, index_t end, Matrix<S>& delta) {
  delta.setZero();
  for (index_t t = begin; t < end; t += pb.C) {
    const index_t c = std::min(pb.C, end - t);
    load_rows(pb.k, sq.batch, sq.start + t, c, h, S(1), ws.k);
    load_rows(pb.v, sq.batch, sq.start + t, c, h, S(1), ws.v);
    auto K = ws.k.topRows(c);
    if (decayed) {
      delta *= pw(c);
      for (index_t j = 0; j < c; ++j) K.row(j) *= pw(c - 1 - j);
    }
    delta.noalias() += K.transpose() * ws.v.topRows(c);
  }
}

// Forward over tokens [begin, end) of one sequence and head from the state in ws.state (zero when
// state_is_zero), leaving the state after `end` there when want_state.
template <class T, class S>
void forward_range(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, const Vector<S>& pw, bool decayed,
                   const Sequence& sq, index_t h, index_t begin, index_t end, bool state_is_zero, const View<T, 4>& o,
                   bool want_state) {
  for (index_t t = begin; t < end; t += pb.C) {
    const index_t c = std::min(pb.C, end - t);
    load_rows(pb.q, sq.batch, sq.start + t, c, h, static_cast<S>(pb.scale), ws.q);
    load_rows(pb.k, sq.batch, sq.start + t, c, h, S(1), ws.k);
    load_rows(pb.v, sq.batch, sq.start + t, c, h, S(1), ws.v);
    {  // the next block's inputs and this block's outputs, while this block computes
      const index_t n = std::min(pb.C, end - t - c);
      prefetch_rows(pb.q, sq.batch, sq.start + t + c, n, h, false);
      prefetch_rows(pb.k, sq.batch, sq.start + t + c, n, h, false);
      prefetch_rows(pb.v, sq.batch, sq.start + t + c, n, h, false);
      prefetch_rows(o, sq.batch, sq.start + t, c, h, true);
    }
    auto Q = ws.q.topRows(c);
    auto K = ws.k.topRows(c);
    auto Vb = ws.v.topRows(c);
    auto O = ws.o.topRows(c);
    auto A = ws.a.topLeftCorner(c, c);
    A.noalias() = Q * K.transpose();
    apply_causal_decay(A, c, pw, decayed);
    triangular_product(A, true, Vb, O);
    if (!state_is_zero) {
      if (decayed)
        for (index_t i = 0; i < c; ++i) Q.row(i) *= pw(i + 1);
      O.noalias() += Q * ws.state;
    }
    store_rows(ws.o, c, S(1), o, sq.batch, sq.start + t, h);
    if (t + c < end || want_state) {
      if (decayed) {
        ws.state *= pw(c);
        for (index_t j = 0; j < c; ++j) K.row(j) *= pw(c - 1 - j);
      }
      if (state_is_zero) ws.state.setZero();
      ws.state.noalias() += K.transpose() * Vb;
      state_is_zero = false;
    }
  }
  if (want_state && state_is_zero) ws.state.setZero();
}

// The gradient of the state before tokens [begin, end) from the one after them (ws.dstate, zero when
// dstate_is_zero), walking blocks backwards: dS = lambda^c dS' + (diag(lambda^i) Q)^T dO. With
// grads, also dk and dv of those tokens and dg_acc -= sum_t t k_t . dk_t.
template <class T, class S>
void backward_keys_range(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, const View<const T, 4>& d_o,
                         const Vector<S>& pw, bool decayed, const Sequence& sq, index_t h, index_t begin, index_t end,
                         bool dstate_is_zero, const View<T, 4>* dk, const View<T, 4>* dv, double& dg_acc,
                         bool want_dstate) {
  const index_t blocks = (end - begin + pb.C - 1) / pb.C;
  for (index_t m = blocks - 1; m >= 0; --m) {
    const index_t t = begin + m * pb.C, c = std::min(pb.C, end - t);
    load_rows(pb.q, sq.batch, sq.start + t, c, h, static_cast<S>(pb.scale), ws.q);
    load_rows(d_o, sq.batch, sq.start + t, c, h, S(1), ws.d_o);
    auto Q = ws.q.topRows(c);
    auto dO = ws.d_o.topRows(c);
    if (dk) {
      load_rows(pb.k, sq.batch, sq.start + t, c, h, S(1), ws.k);
      load_rows(pb.v, sq.batch, sq.start + t, c, h, S(1), ws.v);
      auto K = ws.k.topRows(c);
      auto Vb = ws.v.topRows(c);
      auto P = ws.p.topLeftCorner(c, c);
      auto A = ws.a.topLeftCorner(c, c);
      auto dK = ws.dk.topRows(c);
      auto dV = ws.dv.topRows(c);
      P.noalias() = dO * Vb.transpose();
      apply_causal_decay(P, c, pw, decayed);
      A.noalias() = Q * K.transpose();
      apply_causal_decay(A, c, pw, decayed);
      triangular_product(P.transpose(), false, Q, dK);
      triangular_product(A.transpose(), false, dO, dV);
      if (!dstate_is_zero) {
        auto tk = ws.tmp_k.topRows(c);
        auto tv = ws.tmp_v.topRows(c);
        tk.noalias() = Vb * ws.dstate.transpose();
        tv.noalias() = K * ws.dstate;
        if (decayed)
          for (index_t j = 0; j < c; ++j) {
            tk.row(j) *= pw(c - 1 - j);
            tv.row(j) *= pw(c - 1 - j);
          }
        dK += tk;
        dV += tv;
      }
      for (index_t j = 0; j < c; ++j)
        dg_acc -= static_cast<double>(t + j + 1) * static_cast<double>(K.row(j).dot(dK.row(j)));
      store_rows(ws.dk, c, S(1), *dk, sq.batch, sq.start + t, h);
      store_rows(ws.dv, c, S(1), *dv, sq.batch, sq.start + t, h);
    }
    if (m > 0 || want_dstate) {
      if (decayed) {
        ws.dstate *= pw(c);
        for (index_t i = 0; i < c; ++i) Q.row(i) *= pw(i + 1);
      }
      if (dstate_is_zero) ws.dstate.setZero();
      ws.dstate.noalias() += Q.transpose() * dO;
      dstate_is_zero = false;
    }
  }
  if (want_dstate && dstate_is_zero) ws.dstate.setZero();
}

// dq of tokens [begin, end) from the state before them (ws.state), dg_acc += sum_t t q_t . dq_t;
// leaves the state after `end` in ws.state when want_state.
template <class T, class S>
void backward_queries_range(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, const View<const T, 4>& d_o,
                            const Vector<S>& pw, bool decayed, const Sequence& sq, index_t h, index_t begin,
                            index_t end, bool state_is_zero, const View<T, 4>& dq, double& dg_acc, bool want_state) {
  for (index_t t = begin; t < end; t += pb.C) {
    const index_t c = std::min(pb.C, end - t);
    load_rows(pb.q, sq.batch, sq.start + t, c, h, static_cast<S>(pb.scale), ws.q);
    load_rows(pb.k, sq.batch, sq.start + t, c, h, S(1), ws.k);
    load_rows(pb.v, sq.batch, sq.start + t, c, h, S(1), ws.v);
    load_rows(d_o, sq.batch, sq.start + t, c, h, S(1), ws.d_o);
    auto Q = ws.q.topRows(c);
    auto K = ws.k.topRows(c);
    auto Vb = ws.v.topRows(c);
    auto dO = ws.d_o.topRows(c);
    auto P = ws.p.topLeftCorner(c, c);
    auto dQ = ws.dq.topRows(c);
    P.noalias() = dO * Vb.transpose();
    apply_causal_decay(P, c, pw, decayed);
    triangular_product(P, true, K, dQ);
    if (!state_is_zero) {
      auto tk = ws.tmp_k.topRows(c);
      tk.noalias() = dO * ws.state.transpose();
      if (decayed)
        for (index_t i = 0; i < c; ++i) tk.row(i) *= pw(i + 1);
      dQ += tk;
    }
    for (index_t i = 0; i < c; ++i)
      dg_acc += static_cast<double>(t + i + 1) * static_cast<double>(Q.row(i).dot(dQ.row(i)));
    store_rows(ws.dq, c, static_cast<S>(pb.scale), dq, sq.batch, sq.start + t, h);
    if (t + c < end || want_state) {
      if (decayed) {
        ws.state *= pw(c);
        for (index_t j = 0; j < c; ++j) K.row(j) *= pw(c - 1 - j);
      }
      if (state_is_zero) ws.state.setZero();
      ws.state.noalias() += K.transpose() * Vb;
      state_is_zero = false;
    }
  }
  if (want_state && state_is_zero) ws.state.setZero();
}

// One workspace per worker thread, made on first use.
template <class S>
class WorkspacePool {
 public:
  WorkspacePool(int workers, index_t C, index_t K, index_t V) : slots_(workers), C_(C), K_(K), V_(V) {}
  LightningWorkspace<S>& operator[](int worker) {
    if (!slots_[worker]) slots_[worker] = std::make_unique<LightningWorkspace<S>>(C_, K_, V_);
    return *slots_[worker];
  }

 private:
  std::vector<std::unique_ptr<LightningWorkspace<S>>> slots_;
  index_t C_, K_, V_;
};

// For sequences cut into several segments: the state before each segment (s >= 1), from each
// segment's own contribution (pass 1, in parallel) combined in order:
//   start[s + 1] = lambda^len(s) start[s] + delta[s],  start[0] = initial state.
// Indexed [n * H + h][s]; empty for uncut sequences.
template <class T, class S>
std::vector<std::vector<Matrix<S>>> segment_start_states(WorkspacePool<S>& pool, const LightningProblem<T>& pb,
                                                         const Sequences& seqs, const std::vector<Boundaries>& plan,
                                                         const View<const S, 4>& initial, int threads) {
  const index_t H = static_cast<index_t>(pb.log_decay->size());
  std::vector<std::vector<Matrix<S>>> starts(seqs.size() * H);
  std::vector<WorkItem> todo;
  for (index_t n = 0; n < seqs.size(); ++n)
    for (index_t h = 0; h < H && plan[n].size() > 2; ++h) {
      starts[n * H + h].resize(plan[n].size() - 1);
      for (index_t s = 0; s + 2 < static_cast<index_t>(plan[n].size()); ++s) todo.push_back({n, h, s});
    }
  if (todo.empty()) return starts;
  parallel_for(threads, static_cast<index_t>(todo.size()), [&](index_t i, int worker) {
    const WorkItem it = todo[i];
    const double g = (*pb.log_decay)[it.head];
    Matrix<S> delta(pb.K, pb.V);
    state_delta(pool[worker], pb, decay_powers<S>(g, pb.C), g != 0.0, seqs[it.seq], it.head, plan[it.seq][it.segment],
                plan[it.seq][it.segment + 1], delta);
    starts[it.seq * H + it.head][it.segment + 1] = std::move(delta);
  });
  for (index_t n = 0; n < seqs.size(); ++n)
    for (index_t h = 0; h < H && plan[n].size() > 2; ++h) {
      auto& st = starts[n * H + h];
      Matrix<S> running(pb.K, pb.V);
      if (initial.present()) load_state(initial, n, h, running);
      else running.setZero();
      for (std::size_t s = 1; s < st.size(); ++s) {
        const double len = static_cast<double>(plan[n][s] - plan[n][s - 1]);
        running = static_cast<S>(std::exp((*pb.log_decay)[h] * len)) * running + st[s];
        st[s] = running;
      }
    }
  return starts;
}

// The mirror image for backward: the state gradient after each segment but the last, from each
// later segment's own contribution gamma[s] = sum_i lambda^i q_i do_i^T (pass 1, in parallel):
//   d_end[s] = lambda^len(s+1) d_end[s + 1] + gamma[s + 1],  d_end[last] = d_final_state.
template <class T, class S>
std::vector<std::vector<Matrix<S>>> segment_end_dstates(WorkspacePool<S>& pool, const LightningProblem<T>& pb,
                                                        const View<const T, 4>& d_o, const Sequences& seqs,
                                                        const std::vector<Boundaries>& plan,
                                                        const View<const S, 4>& d_final, int threads) {
  const index_t H = static_cast<index_t>(pb.log_decay->size());
  std::vector<std::vector<Matrix<S>>> d_ends(seqs.size() * H);
  std::vector<WorkItem> todo;
  for (index_t n = 0; n < seqs.size(); ++n)
    for (index_t h = 0; h < H && plan[n].size() > 2; ++h) {
      d_ends[n * H + h].resize(plan[n].size() - 1);
      for (index_t s = 1; s + 1 < static_cast<index_t>(plan[n].size()); ++s) todo.push_back({n, h, s});
    }
  if (todo.empty()) return d_ends;
  parallel_for(threads, static_cast<index_t>(todo.size()), [&](index_t i, int worker) {
    const WorkItem it = todo[i];
    const double g = (*pb.log_decay)[it.head];
    LightningWorkspace<S>& ws = pool[worker];
    double unused = 0;
    backward_keys_range<T, S>(ws, pb, d_o, decay_powers<S>(g, pb.C), g != 0.0, seqs[it.seq], it.head,
                              plan[it.seq][it.segment], plan[it.seq][it.segment + 1], true, nullptr, nullptr, unused,
                              true);
    d_ends[it.seq * H + it.head][it.segment - 1] = ws.dstate;
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
        const double len = static_cast<double>(plan[n][s + 2] - plan[n][s + 1]);
        running = static_cast<S>(std::exp((*pb.log_decay)[h] * len)) * running + de[s];
        de[s] = running;
      }
    }
  return d_ends;
}

}  // namespace cpu::detail

// Forward: o = lightning(q, k, v), with optional initial/final states and cu_seqlens.
template <class T>
void forward(const cpu::Device& device, const LightningAttention& op, detail::identity_t<View<const T, 4>> q,
             detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
             const StateIO<state_t<T>>& state = {}, const CuSeqlens& cu_seqlens = {}) {
  using S = state_t<T>;
  using namespace cpu::detail;
  const char* where = "lcsm::forward(cpu, LightningAttention)";
  const auto p = lcsm::detail::check_forward(where, q, k, v, o, state, cu_seqlens);
  op.check(where, p.heads);
  const LightningProblem<T> pb{q, k, v, p.key_dim, p.value_dim, op.chunk, op.scale_for(p.key_dim), &op.log_decay};
  const Sequences seqs(p.batch, p.time, cu_seqlens);
  const int threads = device.thread_count();
  const auto plan = plan_segments(seqs, p.heads, op.chunk, threads);
  const auto items = work_items(plan, p.heads);
  WorkspacePool<S> pool(threads, op.chunk, p.key_dim, p.value_dim);
  const auto starts = segment_start_states(pool, pb, seqs, plan, state.initial, threads);

  cpu::parallel_for(threads, static_cast<index_t>(items.size()), [&](index_t i, int worker) {
    const WorkItem it = items[i];
    LightningWorkspace<S>& ws = pool[worker];
    const double g = op.log_decay[it.head];
    const bool last = it.segment + 2 == static_cast<index_t>(plan[it.seq].size());
    bool zero = true;
    if (it.segment > 0) {
      ws.state = starts[it.seq * p.heads + it.head][it.segment];
      zero = false;
    } else if (state.initial.present()) {
      load_state(state.initial, it.seq, it.head, ws.state);
      zero = false;
    }
    const bool want_state = last && state.final.present();
    forward_range(ws, pb, decay_powers<S>(g, op.chunk), g != 0.0, seqs[it.seq], it.head, plan[it.seq][it.segment],
                  plan[it.seq][it.segment + 1], zero, o, want_state);
    if (want_state) store_state(ws.state, state.final, it.seq, it.head);
  });
}

// Backward: dq, dk, dv from do; optionally d initial state (from d final state) and the gradient
// of each head's log-decay g_h (d_log_decay, [H], summed over the batch).
template <class T>
void backward(const cpu::Device& device, const LightningAttention& op, detail::identity_t<View<const T, 4>> q,
              detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v,
              detail::identity_t<View<const T, 4>> d_o, View<T, 4> dq, detail::identity_t<View<T, 4>> dk,
              detail::identity_t<View<T, 4>> dv, const StateGrads<state_t<T>>& states = {},
              View<state_t<T>, 1> d_log_decay = {}, const CuSeqlens& cu_seqlens = {}) {
  using S = state_t<T>;
  using namespace cpu::detail;
  const char* where = "lcsm::backward(cpu, LightningAttention)";
  const auto p = lcsm::detail::check_backward(where, q, k, v, d_o, dq, dk, dv, states, cu_seqlens);
  op.check(where, p.heads);
  if (d_log_decay.present()) {
    lcsm::detail::check_output(where, "d_log_decay", d_log_decay);
    lcsm::detail::check_shape(where, "d_log_decay", d_log_decay, {p.heads}, "[H]");
  }
  const LightningProblem<T> pb{q, k, v, p.key_dim, p.value_dim, op.chunk, op.scale_for(p.key_dim), &op.log_decay};
  const Sequences seqs(p.batch, p.time, cu_seqlens);
  const int threads = device.thread_count();
  const auto plan = plan_segments(seqs, p.heads, op.chunk, threads);
  const auto items = work_items(plan, p.heads);
  WorkspacePool<S> pool(threads, op.chunk, p.key_dim, p.value_dim);
  const auto starts = segment_start_states(pool, pb, seqs, plan, states.initial, threads);
  const auto d_ends = segment_end_dstates(pool, pb, d_o, seqs, plan, states.d_final, threads);
  std::vector<double> dg(items.size(), 0.0);

  cpu::parallel_for(threads, static_cast<index_t>(items.size()), [&](index_t i, int worker) {
    const WorkItem it = items[i];
    LightningWorkspace<S>& ws = pool[worker];
    const double g = op.log_decay[it.head];
    const auto pw = decay_powers<S>(g, op.chunk);
    const Sequence sq = seqs[it.seq];
    const index_t begin = plan[it.seq][it.segment], end = plan[it.seq][it.segment + 1];
    const bool first = it.segment == 0, last = it.segment + 2 == static_cast<index_t>(plan[it.seq].size());
    // dq, walking forwards from the state before the segment.
    bool zero = true;
    if (!first) {
      ws.state = starts[it.seq * p.heads + it.head][it.segment];
      zero = false;
    } else if (states.initial.present()) {
      load_state(states.initial, it.seq, it.head, ws.state);
      zero = false;
    }
    const bool want_final = last && states.d_final.present() && d_log_decay.present();
    backward_queries_range(ws, pb, d_o, pw, g != 0.0, sq, it.head, begin, end, zero, dq, dg[i], want_final);
    // dk, dv, walking backwards from the state gradient after the segment.
    bool dzero = true;
    if (!last) {
      ws.dstate = d_ends[it.seq * p.heads + it.head][it.segment];
      dzero = false;
    } else if (states.d_final.present()) {
      load_state(states.d_final, it.seq, it.head, ws.dstate);
      dzero = false;
      if (want_final)  // T <dS_T, S_T>: the final state's own dependence on g
        dg[i] += static_cast<double>(sq.length) * static_cast<double>((ws.dstate.array() * ws.state.array()).sum());
    }
    const bool want_dinitial = first && states.d_initial.present();
    backward_keys_range(ws, pb, d_o, pw, g != 0.0, sq, it.head, begin, end, dzero, &dk, &dv, dg[i], want_dinitial);
    if (want_dinitial) store_state(ws.dstate, states.d_initial, it.seq, it.head);
  });
  if (d_log_decay.present()) {
    std::vector<double> per_head(p.heads, 0.0);
    for (std::size_t i = 0; i < items.size(); ++i) per_head[items[i].head] += dg[i];
    for (index_t h = 0; h < p.heads; ++h) d_log_decay(h) = static_cast<S>(per_head[h]);
  }
}

// Decode: advances state [B, H, K, V] in place by the n tokens of q, k [B, n, H, K], v [B, n, H, V]
// and writes their outputs to o [B, n, H, V]. O(n K V) per head, no history.
template <class T>
void step(const cpu::Device& device, const LightningAttention& op, detail::identity_t<View<const T, 4>> q,
          detail::identity_t<View<const T, 4>> k, detail::identity_t<View<const T, 4>> v, View<T, 4> o,
          View<state_t<T>, 4> state) {
  using S = state_t<T>;
  using namespace cpu::detail;
  const char* where = "lcsm::step(cpu, LightningAttention)";
  const auto p = lcsm::detail::check_step(where, q, k, v, o, state);
  op.check(where, p.heads);
  const index_t K = p.key_dim, V = p.value_dim;
  const S scale = static_cast<S>(op.scale_for(K));
  // Small decodes are not worth a thread: split only above ~1M state elements.
  const int threads =
      static_cast<int>(std::min<index_t>(device.thread_count(), std::max<index_t>(1, p.batch * p.heads * K * V >> 20)));
  cpu::parallel_for(threads, p.batch * p.heads, [&](index_t item, int) {
    const index_t b = item / p.heads, h = item % p.heads;
    const S lambda = static_cast<S>(std::exp(op.log_decay[h]));
    Matrix<S> local;
    const bool direct = state.stride(3) == 1;
    if (!direct) {
      local.resize(K, V);
      load_state(View<const S, 4>(state), b, h, local);
    }
    using Strided = Eigen::Map<Matrix<S>, 0, Eigen::OuterStride<>>;
    Strided s(direct ? &state(b, h, 0, 0) : local.data(), K, V, Eigen::OuterStride<>(direct ? state.stride(2) : V));
    Vector<S> kv(K), vv(V), qv(K), out(V);
    for (index_t t = 0; t < p.time; ++t) {
      for (index_t d = 0; d < K; ++d) {
        qv(d) = scale * static_cast<S>(q(b, t, h, d));
        kv(d) = static_cast<S>(k(b, t, h, d));
      }
      for (index_t c = 0; c < V; ++c) vv(c) = static_cast<S>(v(b, t, h, c));
      out.setZero();
      for (index_t r = 0; r < K; ++r) {  // one pass over the state: update a row, then use it
        auto row = s.row(r);
        row = lambda * row + kv(r) * vv.transpose();
        out.noalias() += qv(r) * row.transpose();
      }
      for (index_t c = 0; c < V; ++c) o(b, t, h, c) = static_cast<T>(out(c));
    }
    if (!direct) store_state(local, state, b, h);
  });
}

}  // namespace lcsm
