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
// Work runs over (sequence, group of heads) items, and over segments of a sequence when there are
// fewer (sequence, head) pairs than threads: each segment's state contribution is computed first,
// then combined in order. An item runs its heads block by block (their rows share pages, see
// head_group); the (.) D products form only the lower block triangle (causal_scores,
// causal_times); the decay factors are applied while a block is copied in; the next block's rows
// are prefetched a few lines at a time between the products (Prefetcher). docs/performance.md
// has the measurements behind each of these.
#pragma once

#include <cmath>
#include <initializer_list>
#include <memory>
#include <vector>

#include "lcsm/core/dtype.hpp"
#include "lcsm/cpu/chunked.hpp"
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
  // q, k, v, d_o: the block's rows; qd, kd, vd, dod: the same rows times their decay factors
  // (lambda^(i+1) for q and do, lambda^(c-1-j) for k and v), written in the same pass as the copy.
  Matrix<S> q, k, v, o, d_o, qd, kd, vd, dod, a, p, dq, dk, dv, state, dstate;
  std::vector<Matrix<S>> states;  // one per head of a grouped work item
  Prefetcher pf;
  void ensure_states(index_t heads) {
    while (static_cast<index_t>(states.size()) < heads) states.emplace_back(state.rows(), state.cols());
  }
  LightningWorkspace(index_t C, index_t K, index_t V)
      : q(C, K), k(C, K), v(C, V), o(C, V), d_o(C, V), qd(C, K), kd(C, K), vd(C, V), dod(C, V), a(C, C), p(C, C),
        dq(C, K), dk(C, K), dv(C, V), state(K, V), dstate(K, V) {}
};

// Copies rows [t, t + c) of head h of x into dst (times scale), and when `factor` is given, the
// same rows times factor[i] into decayed, in one pass.
template <class T, class S>
void load_block(const View<const T, 4>& x, const Sequence& sq, index_t t, index_t c, index_t h, S scale, Matrix<S>& dst,
                const S* factor = nullptr, Matrix<S>* decayed = nullptr) {
  if (factor) load_rows_decayed(x, sq.batch, sq.start + t, c, h, scale, dst, factor, *decayed);
  else load_rows(x, sq.batch, sq.start + t, c, h, scale, dst);
}

// S = lambda^c S + Kd^T V (or S = Kd^T V when S is zero), Kd the decayed keys of the block.
template <class S, class MK, class MV>
void advance_state(Matrix<S>& state, bool& state_is_zero, const Decay<S>& d, index_t c, const MK& Kd, const MV& Vb) {
  if (state_is_zero) {
    state.noalias() = Kd.transpose() * Vb;
    state_is_zero = false;
    return;
  }
  if (d.decayed) apply_decay(state, d.block(c));
  state.noalias() += Kd.transpose() * Vb;
}

// The state contribution of tokens [begin, end) starting from zero: sum_j lambda^(L-j) k_j v_j^T.
template <class T, class S>
void state_delta(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, const Decay<S>& d, const Sequence& sq,
                 index_t h, index_t begin, index_t end, Matrix<S>& delta) {
  bool zero = true;
  for (index_t t = begin; t < end; t += pb.C) {
    const index_t c = std::min(pb.C, end - t);
    load_block(pb.k, sq, t, c, h, S(1), ws.k, d.decayed ? d.rev.data() + (pb.C - c) : nullptr, &ws.kd);
    load_block(pb.v, sq, t, c, h, S(1), ws.v);
    ws.pf.clear();
    const index_t next = std::min(pb.C, end - t - c);
    ws.pf.add(pb.k, sq.batch, sq.start + t + c, next, h, false);
    ws.pf.add(pb.v, sq.batch, sq.start + t + c, next, h, false);
    advance_state(delta, zero, d, c, (d.decayed ? ws.kd : ws.k).topRows(c), ws.v.topRows(c));
    ws.pf.issue_all();
  }
  if (zero) delta.setZero();
}

// One head of a work item: its index, decay factors, state and whether that state is still zero.
template <class S>
struct HeadRun {
  index_t h;
  Decay<S> d;
  Matrix<S>* state;
  bool zero;
};

// One block of one head of the forward:
//   O = causal(Q K^T) V  (the lower block triangle only),  O += Qd S,  S = lambda^c S + Kd^T V.
template <class T, class S>
void forward_block(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, HeadRun<S>& r, const Sequence& sq,
                   index_t t, index_t c, bool update, const View<T, 4>& o, const NextRows& next) {
  const Decay<S>& d = r.d;
  const index_t h = r.h;
  const bool qdecay = d.decayed && !r.zero, kdecay = d.decayed && update;
  load_block(pb.q, sq, t, c, h, static_cast<S>(pb.scale), ws.q, qdecay ? d.pw.data() + 1 : nullptr, &ws.qd);
  load_block(pb.k, sq, t, c, h, S(1), ws.k, kdecay ? d.rev.data() + (pb.C - c) : nullptr, &ws.kd);
  load_block(pb.v, sq, t, c, h, S(1), ws.v);
  Prefetcher& pf = ws.pf;
  pf.clear();
  pf.add(o, sq.batch, sq.start + t, c, h, true);
  for (const auto* x : {&pb.q, &pb.k, &pb.v}) pf.add(*x, sq.batch, sq.start + next.t, next.c, next.h, false);
  auto between = [&pf] { pf.issue_part(kPrefetchParts); };
  auto Q = ws.q.topRows(c);
  auto K = ws.k.topRows(c);
  auto Vb = ws.v.topRows(c);
  auto O = ws.o.topRows(c);
  causal_scores(ws.a, Q, K, c, d, between);
  causal_times(ws.a, false, Vb, ws.o, c, all_finite(Vb), between);
  if (!r.zero) O.noalias() += (qdecay ? ws.qd : ws.q).topRows(c) * *r.state;
  between();
  store_rows(ws.o, c, S(1), o, sq.batch, sq.start + t, h);
  if (update) advance_state(*r.state, r.zero, d, c, (kdecay ? ws.kd : ws.k).topRows(c), Vb);
  pf.issue_all();
}

// Forward over tokens [begin, end) of one sequence for a group of heads, from their states (zero
// where run.zero), leaving the states after `end` there when want_state.
template <class T, class S>
void forward_range(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, std::vector<HeadRun<S>>& runs,
                   const Sequence& sq, index_t begin, index_t end, const View<T, 4>& o, bool want_state) {
  walk_forward(begin, end, pb.C, runs[0].h, static_cast<index_t>(runs.size()), want_state,
               [&](index_t g, index_t t, index_t c, bool update, const NextRows& next) {
                 forward_block(ws, pb, runs[g], sq, t, c, update, o, next);
               });
  if (want_state)
    for (auto& r : runs)
      if (r.zero) r.state->setZero();
}

// One block of one head of the dk, dv pass (r.state is the state gradient after the block):
//   P = causal(dO V^T), A = causal(Q K^T), dK = P^T Q + Vd dS'^T, dV = A^T dO + Kd dS',
//   dS = lambda^c dS' + Qd^T dO  (when update); dg_acc -= sum_t t k_t . dk_t.
// Without dk (dv then absent too) only the state gradient advances.
template <class T, class S>
void backward_keys_block(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, const View<const T, 4>& d_o,
                         HeadRun<S>& r, const Sequence& sq, index_t t, index_t c, bool update, const View<T, 4>* dk,
                         const View<T, 4>* dv, double& dg_acc, const NextRows& next) {
  const Decay<S>& d = r.d;
  const index_t h = r.h;
  const bool qdecay = d.decayed && update, kdecay = d.decayed && !r.zero;
  const S* kfactor = kdecay ? d.rev.data() + (pb.C - c) : nullptr;
  load_block(pb.q, sq, t, c, h, static_cast<S>(pb.scale), ws.q, qdecay ? d.pw.data() + 1 : nullptr, &ws.qd);
  load_block(d_o, sq, t, c, h, S(1), ws.d_o);
  Prefetcher& pf = ws.pf;
  pf.clear();
  if (dk) {
    load_block(pb.k, sq, t, c, h, S(1), ws.k, kfactor, &ws.kd);
    load_block(pb.v, sq, t, c, h, S(1), ws.v, kfactor, &ws.vd);
    pf.add(*dk, sq.batch, sq.start + t, c, h, true);
    pf.add(*dv, sq.batch, sq.start + t, c, h, true);
    pf.add(pb.k, sq.batch, sq.start + next.t, next.c, next.h, false);
    pf.add(pb.v, sq.batch, sq.start + next.t, next.c, next.h, false);
  }
  pf.add(pb.q, sq.batch, sq.start + next.t, next.c, next.h, false);
  pf.add(d_o, sq.batch, sq.start + next.t, next.c, next.h, false);
  auto between = [&pf] { pf.issue_part(kPrefetchParts); };
  auto Q = ws.q.topRows(c);
  auto dO = ws.d_o.topRows(c);
  if (dk) {
    auto K = ws.k.topRows(c);
    auto Vb = ws.v.topRows(c);
    auto dK = ws.dk.topRows(c);
    auto dV = ws.dv.topRows(c);
    causal_scores(ws.p, dO, Vb, c, d, between);
    causal_scores(ws.a, Q, K, c, d, between);
    causal_times(ws.p, true, Q, ws.dk, c, all_finite(Q), between);
    causal_times(ws.a, true, dO, ws.dv, c, all_finite(dO), between);
    if (!r.zero) {
      dK.noalias() += (kdecay ? ws.vd : ws.v).topRows(c) * r.state->transpose();
      between();
      dV.noalias() += (kdecay ? ws.kd : ws.k).topRows(c) * *r.state;
    }
    for (index_t j = 0; j < c; ++j)
      dg_acc -= static_cast<double>(t + j + 1) * static_cast<double>(K.row(j).dot(dK.row(j)));
    store_rows(ws.dk, c, S(1), *dk, sq.batch, sq.start + t, h);
    store_rows(ws.dv, c, S(1), *dv, sq.batch, sq.start + t, h);
  }
  if (update) advance_state(*r.state, r.zero, d, c, (qdecay ? ws.qd : ws.q).topRows(c), dO);
  pf.issue_all();
}

// The gradients of the states before tokens [begin, end) from the ones after them (runs[g].state,
// zero where runs[g].zero), for a group of heads, walking blocks backwards:
// dS = lambda^c dS' + (diag(lambda^i) Q)^T dO. With dk, also dk and dv of those tokens and
// dg[g] -= sum_t t k_t . dk_t. Leaves the state gradients before `begin` when want_dstate.
template <class T, class S>
void backward_keys_range(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, const View<const T, 4>& d_o,
                         std::vector<HeadRun<S>>& runs, const Sequence& sq, index_t begin, index_t end,
                         const View<T, 4>* dk, const View<T, 4>* dv, double* dg, bool want_dstate) {
  walk_backward(begin, end, pb.C, runs[0].h, static_cast<index_t>(runs.size()), want_dstate,
                [&](index_t g, index_t t, index_t c, bool update, const NextRows& next) {
                  backward_keys_block(ws, pb, d_o, runs[g], sq, t, c, update, dk, dv, dg[g], next);
                });
  if (want_dstate)
    for (auto& r : runs)
      if (r.zero) r.state->setZero();
}

// One block of one head of the dq pass (r.state is the state before the block):
//   dQ = causal(dO V^T) K + dOd S^T,  S = lambda^c S + Kd^T V  (when update);
//   dg_acc += sum_t t q_t . dq_t.
template <class T, class S>
void backward_queries_block(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, const View<const T, 4>& d_o,
                            HeadRun<S>& r, const Sequence& sq, index_t t, index_t c, bool update, const View<T, 4>& dq,
                            double& dg_acc, const NextRows& next) {
  const Decay<S>& d = r.d;
  const index_t h = r.h;
  const S scale = static_cast<S>(pb.scale);
  const bool odecay = d.decayed && !r.zero, kdecay = d.decayed && update;
  load_block(pb.q, sq, t, c, h, scale, ws.q);
  load_block(pb.k, sq, t, c, h, S(1), ws.k, kdecay ? d.rev.data() + (pb.C - c) : nullptr, &ws.kd);
  load_block(pb.v, sq, t, c, h, S(1), ws.v);
  load_block(d_o, sq, t, c, h, S(1), ws.d_o, odecay ? d.pw.data() + 1 : nullptr, &ws.dod);
  Prefetcher& pf = ws.pf;
  pf.clear();
  pf.add(dq, sq.batch, sq.start + t, c, h, true);
  for (const auto* x : {&pb.q, &pb.k, &pb.v, &d_o}) pf.add(*x, sq.batch, sq.start + next.t, next.c, next.h, false);
  auto between = [&pf] { pf.issue_part(kPrefetchParts); };
  auto Q = ws.q.topRows(c);
  auto K = ws.k.topRows(c);
  auto Vb = ws.v.topRows(c);
  auto dO = ws.d_o.topRows(c);
  auto dQ = ws.dq.topRows(c);
  causal_scores(ws.p, dO, Vb, c, d, between);
  causal_times(ws.p, false, K, ws.dq, c, all_finite(K), between);
  if (!r.zero) dQ.noalias() += (odecay ? ws.dod : ws.d_o).topRows(c) * r.state->transpose();
  between();
  for (index_t i = 0; i < c; ++i)
    dg_acc += static_cast<double>(t + i + 1) * static_cast<double>(Q.row(i).dot(dQ.row(i)));
  store_rows(ws.dq, c, scale, dq, sq.batch, sq.start + t, h);
  if (update) advance_state(*r.state, r.zero, d, c, (kdecay ? ws.kd : ws.k).topRows(c), Vb);
  pf.issue_all();
}

// dq of tokens [begin, end) for a group of heads from their states before them, dg[g] += sum_t
// t q_t . dq_t; leaves the states after `end` when want_state.
template <class T, class S>
void backward_queries_range(LightningWorkspace<S>& ws, const LightningProblem<T>& pb, const View<const T, 4>& d_o,
                            std::vector<HeadRun<S>>& runs, const Sequence& sq, index_t begin, index_t end,
                            const View<T, 4>& dq, double* dg, bool want_state) {
  walk_forward(begin, end, pb.C, runs[0].h, static_cast<index_t>(runs.size()), want_state,
               [&](index_t g, index_t t, index_t c, bool update, const NextRows& next) {
                 backward_queries_block(ws, pb, d_o, runs[g], sq, t, c, update, dq, dg[g], next);
               });
  if (want_state)
    for (auto& r : runs)
      if (r.zero) r.state->setZero();
}

// Lightning as the segment scans see it (cpu/segment_scan.hpp): a segment of L tokens decays a
// state by lambda^L; its forward contribution is sum_j lambda^(L-j) k_j v_j^T, its backward one
// sum_i lambda^i q_i do_i^T.
template <class T, class S>
struct LightningScan : MatrixScanState<S> {
  using State = Matrix<S>;
  WorkspacePool<LightningWorkspace<S>>& pool;
  const LightningProblem<T>& pb;
  const Sequences& seqs;
  const View<const T, 4>* d_o = nullptr;  // backward only

  double g(index_t h) const { return (*pb.log_decay)[h]; }
  State delta(int worker, const WorkItem& it, index_t begin, index_t end) const {
    State d(pb.K, pb.V);
    state_delta(pool[worker], pb, Decay<S>(g(it.head), pb.C), seqs[it.seq], it.head, begin, end, d);
    return d;
  }
  State gamma(int worker, const WorkItem& it, index_t begin, index_t end) const {
    LightningWorkspace<S>& ws = pool[worker];
    double unused = 0;
    std::vector<HeadRun<S>> runs{{it.head, Decay<S>(g(it.head), pb.C), &ws.dstate, true}};
    backward_keys_range<T, S>(ws, pb, *d_o, runs, seqs[it.seq], begin, end, nullptr, nullptr, &unused, true);
    return ws.dstate;
  }
  void decay(State& s, index_t, index_t h, index_t begin, index_t end) const {
    s *= static_cast<S>(std::exp(g(h) * static_cast<double>(end - begin)));
  }
};

// The runs of a work item's heads, from the states before its segment (zero where none).
template <class S>
std::vector<HeadRun<S>> start_runs(const LightningAttention& op, const SegmentPlan& sp, const WorkItem& it,
                                   const PerSegment<Matrix<S>>& starts, const View<const S, 4>& initial,
                                   Matrix<S>* states) {
  std::vector<HeadRun<S>> runs;
  for (index_t g = 0; g < it.heads; ++g) {
    const index_t h = it.head + g;
    const bool loaded = item_start(starts, sp, it, h, initial, states[g], load_state<S>);
    runs.push_back({h, Decay<S>(op.log_decay[h], op.chunk), &states[g], !loaded});
  }
  return runs;
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
  lcsm::detail::Operands ops(where);
  ops.in("op.log_decay", lcsm::detail::host_vector_view(op.log_decay));
  const auto p = lcsm::detail::check_forward(where, q, k, v, o, state, cu_seqlens, ops);
  op.check(where, p.heads);
  if (p.time == 0 && state.final.absent()) return;  // no tokens and no state: nothing to plan
  const LightningProblem<T> pb{q, k, v, p.key_dim, p.value_dim, op.chunk, op.scale_for(p.key_dim), &op.log_decay};
  const int threads = device.thread_count();
  const SegmentPlan sp(Sequences(p.batch, p.time, cu_seqlens), p.heads, op.chunk, threads);
  WorkspacePool<LightningWorkspace<S>> pool(threads, op.chunk, p.key_dim, p.value_dim);
  const auto starts = segment_start_states(LightningScan<T, S>{{p.key_dim, p.value_dim}, pool, pb, sp.seqs}, sp,
                                           state.initial, threads);

  cpu::parallel_for(threads, static_cast<index_t>(sp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = sp.items[i];
    LightningWorkspace<S>& ws = pool[worker];
    ws.ensure_states(it.heads);
    const bool want_state = sp.last(it) && state.final.present();
    auto runs = start_runs(op, sp, it, starts, state.initial, ws.states.data());
    forward_range(ws, pb, runs, sp.seqs[it.seq], sp.begin(it), sp.end(it), o, want_state);
    if (want_state)
      for (const auto& r : runs) store_state(*r.state, state.final, it.seq, r.h);
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
  lcsm::detail::Operands ops(where);
  ops.in("op.log_decay", lcsm::detail::host_vector_view(op.log_decay)).out("d_log_decay", d_log_decay);
  const auto p = lcsm::detail::check_backward(where, q, k, v, d_o, dq, dk, dv, states, cu_seqlens, ops);
  op.check(where, p.heads);
  if (d_log_decay.present()) lcsm::detail::check_shape(where, "d_log_decay", d_log_decay, {p.heads}, "[H]");
  if (p.time == 0 && states.d_initial.absent()) {  // no tokens and no state gradient: only dg = 0
    for (index_t h = 0; h < d_log_decay.size(0); ++h) d_log_decay(h) = S(0);
    return;
  }
  const LightningProblem<T> pb{q, k, v, p.key_dim, p.value_dim, op.chunk, op.scale_for(p.key_dim), &op.log_decay};
  const int threads = device.thread_count();
  const SegmentPlan sp(Sequences(p.batch, p.time, cu_seqlens), p.heads, op.chunk, threads);
  WorkspacePool<LightningWorkspace<S>> pool(threads, op.chunk, p.key_dim, p.value_dim);
  const LightningScan<T, S> scan{{p.key_dim, p.value_dim}, pool, pb, sp.seqs, &d_o};
  const auto starts = segment_start_states(scan, sp, states.initial, threads);
  const auto d_ends = segment_end_dstates(scan, sp, states.d_final, threads);
  std::vector<double> dg(sp.items.size() * sp.group, 0.0);  // [item][head of the group]

  cpu::parallel_for(threads, static_cast<index_t>(sp.items.size()), [&](index_t i, int worker) {
    const WorkItem it = sp.items[i];
    LightningWorkspace<S>& ws = pool[worker];
    ws.ensure_states(2 * it.heads);
    const Sequence sq = sp.seqs[it.seq];
    double* dgi = dg.data() + i * sp.group;
    // dq, walking forwards from the states before the segment.
    auto runs = start_runs(op, sp, it, starts, states.initial, ws.states.data());
    const bool want_final = sp.last(it) && states.d_final.present() && d_log_decay.present();
    backward_queries_range(ws, pb, d_o, runs, sq, sp.begin(it), sp.end(it), dq, dgi, want_final);
    // dk, dv, walking backwards from the state gradients after the segment.
    std::vector<HeadRun<S>> druns;
    for (index_t g = 0; g < it.heads; ++g) {
      HeadRun<S> r{runs[g].h, runs[g].d, &ws.states[it.heads + g], true};
      r.zero = !item_end(d_ends, sp, it, r.h, states.d_final, *r.state, load_state<S>);
      if (want_final)  // T <dS_T, S_T>: the final state's own dependence on g
        dgi[g] +=
            static_cast<double>(sq.length) * static_cast<double>((r.state->array() * runs[g].state->array()).sum());
      druns.push_back(r);
    }
    const bool want_dinitial = sp.first(it) && states.d_initial.present();
    backward_keys_range(ws, pb, d_o, druns, sq, sp.begin(it), sp.end(it), &dk, &dv, dgi, want_dinitial);
    if (want_dinitial)
      for (const auto& r : druns) store_state(*r.state, states.d_initial, it.seq, r.h);
  });
  if (d_log_decay.present()) {
    std::vector<double> per_head(p.heads, 0.0);
    for (std::size_t i = 0; i < sp.items.size(); ++i)
      for (index_t g = 0; g < sp.items[i].heads; ++g) per_head[sp.items[i].head + g] += dg[i * sp.group + g];
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
  lcsm::detail::Operands ops(where);
  ops.in("op.log_decay", lcsm::detail::host_vector_view(op.log_decay));
  const auto p = lcsm::detail::check_step(where, q, k, v, o, state, ops);
  op.check(where, p.heads);
  const index_t K = p.key_dim, V = p.value_dim;
  const S scale = static_cast<S>(op.scale_for(K));
  for_each_state_slice(device, state, [&](index_t b, index_t h, S* s, index_t ld) {
    const SameDecay<S> lambda{static_cast<S>(std::exp(op.log_decay[h]))};
    std::vector<S> buf(2 * K + 2 * V);
    S *qv = buf.data(), *kv = qv + K, *vv = kv + K, *out = vv + V;
    for (index_t t = 0; t < p.time; ++t) {
      for (index_t d = 0; d < K; ++d) {
        qv[d] = scale * static_cast<S>(q(b, t, h, d));
        kv[d] = static_cast<S>(k(b, t, h, d));
      }
      for (index_t c = 0; c < V; ++c) vv[c] = static_cast<S>(v(b, t, h, c));
      decode_token(s, ld, K, V, qv, kv, vv, lambda, out);
      for (index_t c = 0; c < V; ++c) o(b, t, h, c) = static_cast<T>(out[c]);
    }
  });
}

}  // namespace lcsm
