// Decode on the CPU, for every recurrent family: one token advances a K x W state slice in place,
//   s_r = lambda_r s_r + k_r v,   out = sum_r q_r s_r,
// in one pass over the slice, and the driver that runs it over the [B, H] slices of a state.
#pragma once

#include <algorithm>
#include <vector>

#include "lcsm/cpu/chunk_io.hpp"
#include "lcsm/cpu/device.hpp"

namespace lcsm::cpu::detail {

// The decay of every row: one lambda for all (lightning, cosFormer: 1) or one per row (the gates).
template <class S>
struct SameDecay {
  S lambda;
  S operator()(index_t) const { return lambda; }
};
template <class S>
struct RowDecay {
  const S* lambda;
  S operator()(index_t r) const { return lambda[r]; }
};

// One token on columns [0, W) of a K x W strip of a state (row stride ld), updating a row and using
// it while it is in registers. W is a compile-time width so that the W accumulators and v stay in
// vector registers.
template <int W, class S, class Decay>
void decode_strip(S* s, index_t ld, index_t K, const S* q, const S* k, const S* v, const Decay& lambda, S* out) {
  S acc[W] = {}, vv[W];
  for (int c = 0; c < W; ++c) vv[c] = v[c];
  for (index_t r = 0; r < K; ++r) {
    S* row = s + r * ld;
    const S kr = k[r], qr = q[r], lr = lambda(r);
    for (int c = 0; c < W; ++c) {
      const S x = lr * row[c] + kr * vv[c];
      row[c] = x;
      acc[c] += qr * x;
    }
  }
  for (int c = 0; c < W; ++c) out[c] = acc[c];
}

// The same over all V columns: strips of 512 bytes (128 floats: 8 + 8 AVX-512 registers), then
// narrower ones, then single columns.
template <class S, class Decay>
void decode_token(S* s, index_t ld, index_t K, index_t V, const S* q, const S* k, const S* v, const Decay& lambda,
                  S* out) {
  constexpr int W = 512 / static_cast<int>(sizeof(S));
  index_t c = 0;
  for (; c + W <= V; c += W) decode_strip<W>(s + c, ld, K, q, k, v + c, lambda, out + c);
  for (; c + W / 4 <= V; c += W / 4) decode_strip<W / 4>(s + c, ld, K, q, k, v + c, lambda, out + c);
  for (; c < V; ++c) decode_strip<1>(s + c, ld, K, q, k, v + c, lambda, out + c);
}

// body(b, h, s, ld) for every [b, h] slice of state [B, H, R, W], with s its first element and ld its
// row stride: the caller's memory when rows are unit-stride, else a dense copy written back after.
// Small decodes are not worth a thread: split only above ~1M state elements.
template <class S, class Body>
void for_each_state_slice(const Device& device, const View<S, 4>& state, Body&& body) {
  const index_t B = state.size(0), H = state.size(1), R = state.size(2), W = state.size(3);
  const int threads =
      static_cast<int>(std::min<index_t>(device.thread_count(), std::max<index_t>(1, B * H * R * W >> 20)));
  parallel_for(threads, B * H, [&](index_t item, int) {
    const index_t b = item / H, h = item % H;
    const bool direct = state.stride(3) == 1;
    Matrix<S> local;
    if (!direct) {
      local.resize(R, W);
      load_state(View<const S, 4>(state), b, h, local);
    }
    body(b, h, direct ? &state(b, h, 0, 0) : local.data(), direct ? state.stride(2) : W);
    if (!direct) store_state(local, state, b, h);
  });
}

}  // namespace lcsm::cpu::detail
