// The arguments of every Toeplitz kernel, passed by value and filled once per call
// (toeplitz/run.cuh). Sequences are B rows of n tokens, or the cu_seqlens segments of row 0.
#pragma once

#include <cstdint>

namespace lcsm::cuda::detail {

// Element strides of a rank-3 view [B, n, C] or a rank-2 one [C, count] (s2 unused).
struct Strides3 {
  std::int64_t s0, s1, s2;
};

struct ToeplitzParams {
  // The input and output of the pass: x -> y (forward), dy -> dx (backward), in the element type of
  // the kernel's template; `in2` is x when dy is `in` (the coefficient gradient).
  const void* in;
  const void* in2;
  void* out;
  Strides3 s_in, s_in2, s_out;

  // Coefficients [C, count], a_r at index center + r.
  const void* coefficients;
  Strides3 s_a;
  std::int64_t count, center, cover;  // cover: the n they are for (the longest sequence allowed)
  bool causal;

  std::int64_t batch, time, channels, sequences;
  const void* cu_seqlens;  // device memory (int32 or int64), contents clamped to [0, time]
  bool cu_seqlens_int64;

  // FFT columns: one per (sequence, channel), ld floats apart (L real values, or L / 2 + 1 complex
  // bins, in place); the coefficient spectra, one column per channel.
  std::int64_t fft_length, ld;
  float* columns;
  float* columns2;  // backward: the x columns beside the dy ones
  float* coefficient_columns;
  // Per (sequence, channel) and per channel: 1 where a column holds a non-finite value (it takes the
  // direct sums instead of the FFT, where a non-finite value reaches exactly the outputs it should).
  int* column_flags;
  int* column_flags2;
  int* coefficient_flags;
  // The coefficient gradient, fp32 [C, count], before it is written in the element type.
  float* coefficient_grad;
  std::int64_t* longest;  // device: the longest sequence (the coefficient gradient's reach)

  // Decode: the history [B, n_max, C] (written at rows position .. position + m) and its position.
  void* history;
  Strides3 s_history;
  std::int64_t position, tokens;
};

}  // namespace lcsm::cuda::detail
