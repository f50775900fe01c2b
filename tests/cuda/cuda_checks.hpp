// GPU-only checks whose device code lives in cuda_checks.cu (the Catch2 cases are plain C++).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "lcsm/core/tensor.hpp"

namespace lcsm::test {

struct LongRunResult {
  double output_rel_rms, output_yardstick, state_rel_rms, seconds;
  std::int64_t sampled_rows;
  std::vector<double> sampled_output, sampled_reference;  // for the tolerance
};

enum class LongFamily { lightning, scalar_gate, vector_gate };

// A forward of the family, bf16, B = 1, H heads, K = V = 128, T tokens (T H D >= 2^31 exercises
// 64-bit indexing): inputs (and gates, fp32 log-sigmoid(N(0, 1)) / 16 as fla's tests draw them)
// generated on the GPU, outputs of `check_heads` sampled heads at sampled positions and their
// final states compared with a float64 recurrence on the host.
LongRunResult run_long_sequence(LongFamily family, std::int64_t T, int H, int check_heads, std::uint64_t seed);

struct LongBackwardResult {
  double dq_rel_rms, dk_rel_rms, dv_rel_rms, yardstick, d_initial_rel_rms, seconds;
  bool decay_gradient_finite;
  std::vector<double> sampled_gradients, sampled_reference;  // dq, dk, dv rows, for the tolerance
};

// A backward of lightning or the scalar gate (bf16, B = 1, H heads, K = V = 128, T tokens, a random
// final-state gradient, the decay gradient wanted): dq, dk, dv of `check_heads` heads at 64 sampled
// positions and their whole initial-state gradient against a float64 recurrence on the host
// (forwards for dq, backwards for the state gradient). The decay gradient is checked to be finite.
LongBackwardResult run_long_backward(LongFamily family, std::int64_t T, int H, int check_heads, std::uint64_t seed);

// The Toeplitz forward's workspace bytes for a causal float convolution of n = 32768 (FFT length
// 2^16, where Kernels::automatic takes the fused FFT convolution), C = 4, under Kernels `kernels`
// (0 automatic, 1 portable, 2 fused_fft).
std::size_t toeplitz_forward_workspace(int kernels);

// Whether the sm_90a forward's TMA tile map (chunked/tiles_sm90.cuh) encodes on this driver for a
// contiguous bf16 [B, T, H, D] tensor.
bool sm90_tile_map_encodes(std::int64_t B, std::int64_t T, int H, int D);
// Whether it refuses a heads-major layout whose column coordinates pass 2^31 (tma_tile takes ints).
bool sm90_tile_map_refuses_wide_heads();
// LCSM_CUDA_SM90_TMA as the CUDA translation units see it.
bool sm90_tma_loads_on();

// The vector gate's sm_90a output launch and its fallback (chunked/key_gate_sm90.cuh): a bf16
// forward, B = 1, K = V = 128, T tokens, H heads, gates log-sigmoid(N(0, 1)) / 16 (and, when
// `steep_token`, -60 on every key of token T / 2 of head 0); how many of its CTAs set their
// fallback flag, of how many (ctas = -1: this device does not run the sm_90a kernel).
struct FallbackCount {
  int flagged, ctas;
};
FallbackCount vector_gate_fallbacks(std::int64_t T, int H, bool steep_token);

// Calls that must throw; returns the exception message ("" when nothing was thrown).
std::string forward_without_workspace_message();
std::string forward_with_large_key_dim_message();
// cosFormer's CUDA-only argument errors: "k136" (K > 128), "no_length" and "no_positions" (decode
// without M or positions), "non_causal_step", "positions_shape" ([3] positions for 2 sequences),
// "short_m" (T > M); the message, or "" when nothing was thrown.
std::string cosformer_error_message(const std::string& which);
// A lightning backward with a decay gradient and no workspace, or with V = 320 (> 256).
std::string backward_error_message(bool large_value_dim);

}  // namespace lcsm::test
