// The float64 reference of the unified model (EOS: expand, oscillation, shrink).
//
//   m_t = a_t (.) m_{t-1} + e_t i_t^T,   a_t = exp(g_t) broadcast over the V columns,
//   y_t = m_t^T s_t,
//
// m_t in R^{K x V} per sequence and head. Plain loops in double, nothing shared with the
// backends: this is the ground truth ports are checked against. Two independent evaluation
// orders (recurrent, and parallel with explicit decay products) check each other; `backward`
// gives the gradients of every input and of the initial state.
#pragma once

#include <cmath>
#include <vector>

#include "lcsm/core/error.hpp"
#include "lcsm/core/sequences.hpp"
#include "lcsm/core/tensor.hpp"
#include "lcsm/core/validate.hpp"

namespace lcsm::reference {

// The oscillation kinds of the model (docs/design.md, section 1), for documentation and for reducing dg.
enum class Oscillation { none, head, token, token_key };

// One EOS instance. All views are [B, T, H, K] (shrink, expand, log_decay) or [B, T, H, V]
// (input). The log-decay is one [B, T, H, K] view whatever its kind: zero strides broadcast a
// per-head or per-token decay (see broadcast_* below); absent means a_t = 1.
struct Eos {
  View<const double, 4> shrink, expand, input, log_decay;
  View<const double, 4> initial_state;  // [N, H, K, V], absent: zero
  CuSeqlens cu_seqlens;

  index_t batch() const { return shrink.size(0); }
  index_t time() const { return shrink.size(1); }
  index_t heads() const { return shrink.size(2); }
  index_t key_dim() const { return shrink.size(3); }
  index_t value_dim() const { return input.size(3); }
  index_t sequences() const { return cu_seqlens.present() ? cu_seqlens.num_sequences() : batch(); }
};

// Gradients; each absent view is skipped. d_log_decay is the full [B, T, H, K] gradient: reduce
// it over broadcast dimensions with reduce_log_decay_grad.
struct EosGrads {
  View<double, 4> d_shrink, d_expand, d_input, d_log_decay, d_initial_state;
};

// Per-head g [H] as a [B, T, H, K] view with zero strides (g must outlive the view).
inline View<const double, 4> broadcast_head(const double* g, index_t B, index_t T, index_t H, index_t K) {
  return {g, {B, T, H, K}, {0, 0, 1, 0}};
}
// Per-token g [B, T, H] (strides of a row-major [B, T, H] tensor) as [B, T, H, K].
inline View<const double, 4> broadcast_token(const double* g, index_t B, index_t T, index_t H, index_t K) {
  return {g, {B, T, H, K}, {T * H, H, 1, 0}};
}

namespace detail {

inline void check(const Eos& eos, const char* where) {
  using lcsm::detail::check_shape;
  const index_t B = eos.batch(), T = eos.time(), H = eos.heads(), K = eos.key_dim(), V = eos.value_dim();
  lcsm::detail::check_memory(where, "shrink", eos.shrink);
  lcsm::detail::check_memory(where, "expand", eos.expand);
  lcsm::detail::check_memory(where, "input", eos.input);
  check_shape(where, "expand", eos.expand, eos.shrink.shape(), "[B, T, H, K], the shape of shrink");
  check_shape(where, "input", eos.input, {B, T, H, V}, "[B, T, H, V]");
  if (eos.log_decay.present())
    check_shape(where, "log_decay", eos.log_decay, eos.shrink.shape(), "[B, T, H, K] (broadcast)");
  lcsm::detail::check_cu_seqlens(where, eos.cu_seqlens, B, T);
  if (eos.initial_state.present())
    check_shape(where, "initial_state", eos.initial_state, {eos.sequences(), H, K, V}, "[N, H, K, V]");
}

inline double decay_at(const Eos& eos, index_t b, index_t t, index_t h, index_t k) {
  return eos.log_decay.present() ? std::exp(eos.log_decay(b, t, h, k)) : 1.0;
}

}  // namespace detail

// Token by token: O(T K V) per head. y: [B, T, H, V]; final_state: [N, H, K, V] or absent.
inline void recurrent(const Eos& eos, View<double, 4> y, View<double, 4> final_state = {}) {
  detail::check(eos, "lcsm::reference::recurrent");
  const index_t H = eos.heads(), K = eos.key_dim(), V = eos.value_dim();
  const Sequences seqs(eos.batch(), eos.time(), eos.cu_seqlens);
  std::vector<double> m(K * V);
  for (index_t n = 0; n < seqs.size(); ++n) {
    const Sequence sq = seqs[n];
    for (index_t h = 0; h < H; ++h) {
      for (index_t k = 0; k < K; ++k)
        for (index_t c = 0; c < V; ++c)
          m[k * V + c] = eos.initial_state.present() ? eos.initial_state(n, h, k, c) : 0.0;
      for (index_t t = sq.start; t < sq.start + sq.length; ++t) {
        for (index_t k = 0; k < K; ++k) {
          const double a = detail::decay_at(eos, sq.batch, t, h, k), e = eos.expand(sq.batch, t, h, k);
          for (index_t c = 0; c < V; ++c) m[k * V + c] = a * m[k * V + c] + e * eos.input(sq.batch, t, h, c);
        }
        for (index_t c = 0; c < V; ++c) {
          double acc = 0;
          for (index_t k = 0; k < K; ++k) acc += m[k * V + c] * eos.shrink(sq.batch, t, h, k);
          y(sq.batch, t, h, c) = acc;
        }
      }
      if (final_state.present())
        for (index_t k = 0; k < K; ++k)
          for (index_t c = 0; c < V; ++c) final_state(n, h, k, c) = m[k * V + c];
    }
  }
}

// All pairs with explicit decay products: y_t = sum_{j<=t} (sum_k s_t[k] e_j[k] P_{j,t}[k]) i_j
// + sum_k s_t[k] P_{0,t}[k] m_0[k, :], with P_{j,t} = prod_{r=j+1..t} a_r. O(T^2 (K + V)) per head.
inline void parallel(const Eos& eos, View<double, 4> y, View<double, 4> final_state = {}) {
  detail::check(eos, "lcsm::reference::parallel");
  const index_t H = eos.heads(), K = eos.key_dim(), V = eos.value_dim();
  const Sequences seqs(eos.batch(), eos.time(), eos.cu_seqlens);
  std::vector<double> prod(K), out(V);
  for (index_t n = 0; n < seqs.size(); ++n) {
    const Sequence sq = seqs[n];
    const index_t b = sq.batch, t0 = sq.start, t1 = sq.start + sq.length;
    for (index_t h = 0; h < H; ++h) {
      for (index_t t = t0; t < t1; ++t) {
        std::fill(prod.begin(), prod.end(), 1.0);
        std::fill(out.begin(), out.end(), 0.0);
        for (index_t j = t; j >= t0; --j) {
          double w = 0;
          for (index_t k = 0; k < K; ++k) w += eos.shrink(b, t, h, k) * eos.expand(b, j, h, k) * prod[k];
          for (index_t c = 0; c < V; ++c) out[c] += w * eos.input(b, j, h, c);
          for (index_t k = 0; k < K; ++k) prod[k] *= detail::decay_at(eos, b, j, h, k);
        }
        if (eos.initial_state.present())
          for (index_t k = 0; k < K; ++k) {
            const double w = eos.shrink(b, t, h, k) * prod[k];
            for (index_t c = 0; c < V; ++c) out[c] += w * eos.initial_state(n, h, k, c);
          }
        for (index_t c = 0; c < V; ++c) y(b, t, h, c) = out[c];
      }
      if (!final_state.present()) continue;
      std::fill(prod.begin(), prod.end(), 1.0);
      for (index_t k = 0; k < K; ++k)
        for (index_t c = 0; c < V; ++c) final_state(n, h, k, c) = 0;
      for (index_t j = t1 - 1; j >= t0; --j) {
        for (index_t k = 0; k < K; ++k)
          for (index_t c = 0; c < V; ++c)
            final_state(n, h, k, c) += prod[k] * eos.expand(b, j, h, k) * eos.input(b, j, h, c);
        for (index_t k = 0; k < K; ++k) prod[k] *= detail::decay_at(eos, b, j, h, k);
      }
      if (eos.initial_state.present())
        for (index_t k = 0; k < K; ++k)
          for (index_t c = 0; c < V; ++c) final_state(n, h, k, c) += prod[k] * eos.initial_state(n, h, k, c);
    }
  }
}

// Reverse-mode gradients given dy [B, T, H, V] and d_final_state [N, H, K, V] (absent: zero).
// Walks each sequence backwards, recomputing the states of one segment at a time from stored
// checkpoints, so memory stays O(segment K V) per head:
//   dm_t += s_t dy_t^T;  ds_t = m_t dy_t;  de_t = dm_t i_t;  di_t = dm_t^T e_t;
//   dg_t[k] = a_t[k] sum_v dm_t[k, v] m_{t-1}[k, v];  dm_{t-1} = a_t (.) dm_t.
inline void backward(const Eos& eos, View<const double, 4> dy, View<const double, 4> d_final_state,
                     const EosGrads& grads) {
  const char* where = "lcsm::reference::backward";
  detail::check(eos, where);
  const index_t H = eos.heads(), K = eos.key_dim(), V = eos.value_dim(), KV = K * V;
  lcsm::detail::check_shape(where, "dy", dy, eos.input.shape(), "[B, T, H, V]");
  if (d_final_state.present())
    lcsm::detail::check_shape(where, "d_final_state", d_final_state, {eos.sequences(), H, K, V}, "[N, H, K, V]");
  const Sequences seqs(eos.batch(), eos.time(), eos.cu_seqlens);
  constexpr index_t segment = 32;
  std::vector<double> checkpoints, states((segment + 1) * KV), dm(KV);
  for (index_t n = 0; n < seqs.size(); ++n) {
    const Sequence sq = seqs[n];
    const index_t b = sq.batch, L = sq.length, num_segments = (L + segment - 1) / segment;
    for (index_t h = 0; h < H; ++h) {
      // Forward: the state before each segment.
      checkpoints.assign((num_segments + 1) * KV, 0.0);
      std::vector<double> m(KV);
      for (index_t k = 0; k < K; ++k)
        for (index_t c = 0; c < V; ++c)
          m[k * V + c] = eos.initial_state.present() ? eos.initial_state(n, h, k, c) : 0.0;
      for (index_t t = 0; t < L; ++t) {
        if (t % segment == 0) std::copy(m.begin(), m.end(), checkpoints.begin() + (t / segment) * KV);
        for (index_t k = 0; k < K; ++k) {
          const double a = detail::decay_at(eos, b, sq.start + t, h, k), e = eos.expand(b, sq.start + t, h, k);
          for (index_t c = 0; c < V; ++c) m[k * V + c] = a * m[k * V + c] + e * eos.input(b, sq.start + t, h, c);
        }
      }
      for (index_t k = 0; k < K; ++k)
        for (index_t c = 0; c < V; ++c) dm[k * V + c] = d_final_state.present() ? d_final_state(n, h, k, c) : 0.0;
      // Backward, one segment at a time: states[i] holds m before token (start + i).
      for (index_t sgi = num_segments - 1; sgi >= 0; --sgi) {
        const index_t s0 = sgi * segment, s1 = std::min(L, s0 + segment);
        std::copy(checkpoints.begin() + sgi * KV, checkpoints.begin() + (sgi + 1) * KV, states.begin());
        for (index_t t = s0; t < s1; ++t) {
          const double* prev = &states[(t - s0) * KV];
          double* next = &states[(t - s0 + 1) * KV];
          for (index_t k = 0; k < K; ++k) {
            const double a = detail::decay_at(eos, b, sq.start + t, h, k), e = eos.expand(b, sq.start + t, h, k);
            for (index_t c = 0; c < V; ++c)
              next[k * V + c] = a * prev[k * V + c] + e * eos.input(b, sq.start + t, h, c);
          }
        }
        for (index_t t = s1 - 1; t >= s0; --t) {
          const index_t tt = sq.start + t;
          const double* mt = &states[(t - s0 + 1) * KV];
          const double* mprev = &states[(t - s0) * KV];
          for (index_t k = 0; k < K; ++k)
            for (index_t c = 0; c < V; ++c) dm[k * V + c] += eos.shrink(b, tt, h, k) * dy(b, tt, h, c);
          if (grads.d_shrink.present())
            for (index_t k = 0; k < K; ++k) {
              double acc = 0;
              for (index_t c = 0; c < V; ++c) acc += mt[k * V + c] * dy(b, tt, h, c);
              grads.d_shrink(b, tt, h, k) = acc;
            }
          if (grads.d_expand.present())
            for (index_t k = 0; k < K; ++k) {
              double acc = 0;
              for (index_t c = 0; c < V; ++c) acc += dm[k * V + c] * eos.input(b, tt, h, c);
              grads.d_expand(b, tt, h, k) = acc;
            }
          if (grads.d_input.present())
            for (index_t c = 0; c < V; ++c) {
              double acc = 0;
              for (index_t k = 0; k < K; ++k) acc += dm[k * V + c] * eos.expand(b, tt, h, k);
              grads.d_input(b, tt, h, c) = acc;
            }
          for (index_t k = 0; k < K; ++k) {
            const double a = detail::decay_at(eos, b, tt, h, k);
            if (grads.d_log_decay.present()) {
              double acc = 0;
              for (index_t c = 0; c < V; ++c) acc += dm[k * V + c] * mprev[k * V + c];
              grads.d_log_decay(b, tt, h, k) = a * acc;
            }
            for (index_t c = 0; c < V; ++c) dm[k * V + c] *= a;
          }
        }
      }
      if (grads.d_initial_state.present())
        for (index_t k = 0; k < K; ++k)
          for (index_t c = 0; c < V; ++c) grads.d_initial_state(n, h, k, c) = dm[k * V + c];
    }
  }
}

// Sum of a full [B, T, H, K] decay gradient over the dimensions a broadcast decay does not have:
// `head` -> [H] (written to out[h]), `token` -> [B, T, H], `token_key` -> itself.
inline std::vector<double> reduce_log_decay_grad(View<const double, 4> dg, Oscillation kind) {
  const index_t B = dg.size(0), T = dg.size(1), H = dg.size(2), K = dg.size(3);
  std::vector<double> out;
  switch (kind) {
    case Oscillation::none: return out;
    case Oscillation::head:
      out.assign(H, 0.0);
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < T; ++t)
          for (index_t h = 0; h < H; ++h)
            for (index_t k = 0; k < K; ++k) out[h] += dg(b, t, h, k);
      return out;
    case Oscillation::token:
      out.assign(B * T * H, 0.0);
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < T; ++t)
          for (index_t h = 0; h < H; ++h)
            for (index_t k = 0; k < K; ++k) out[(b * T + t) * H + h] += dg(b, t, h, k);
      return out;
    case Oscillation::token_key:
      out.resize(B * T * H * K);
      for (index_t b = 0; b < B; ++b)
        for (index_t t = 0; t < T; ++t)
          for (index_t h = 0; h < H; ++h)
            for (index_t k = 0; k < K; ++k) out[((b * T + t) * H + h) * K + k] = dg(b, t, h, k);
      return out;
  }
  return out;
}

}  // namespace lcsm::reference
