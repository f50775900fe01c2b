// GPU-only cases: a 1M-token run against float64 on sampled rows, and CUDA-specific errors.
#include <catch2/catch.hpp>
#include <cstdlib>

#include "cuda/cuda_checks.hpp"
#include "suite/seeds.hpp"
#include "support/backend.hpp"
#include "support/compare.hpp"
#include "support/probe.hpp"

using namespace lcsm::test;
using Catch::Contains;

namespace {

void check_long(LongFamily family, const char* what) {
  const char* env = std::getenv("LCSM_LONG_T");
  const std::int64_t T = env ? std::atoll(env) : (1 << 20);
  const LongRunResult r = run_long_sequence(family, T, 16, 2, fresh_seed());
  INFO(what << " T=" << T << " output rel_rms=" << r.output_rel_rms << " (bf16 yardstick " << r.output_yardstick
            << ") final state rel_rms=" << r.state_rel_rms << " rows=" << r.sampled_rows << " in " << r.seconds
            << " s");
  const Verdict v = judge(r.sampled_output, r.sampled_reference, tolerance(Dtype::bf16, r.sampled_reference));
  INFO(v.str());
  CHECK(v.ok);
  CHECK(r.state_rel_rms <= 1e-5);
  WARN(what << " 1M-token check: output rel_rms " << r.output_rel_rms << " (yardstick " << r.output_yardstick
            << "), final state rel_rms " << r.state_rel_rms);
}

}  // namespace

TEST_CASE("cuda lightning: 1M tokens, 16 heads, D = 128 against float64 on sampled rows", "[cuda][long]") {
  check_long(LongFamily::lightning, "lightning");
}
TEST_CASE("cuda scalar gate: 1M tokens, 16 heads, D = 128 against float64 on sampled rows", "[cuda][long][gated]") {
  check_long(LongFamily::scalar_gate, "scalar gate");
}
TEST_CASE("cuda vector gate: 1M tokens, 16 heads, D = 128 against float64 on sampled rows", "[cuda][long][gated]") {
  check_long(LongFamily::vector_gate, "vector gate");
}

namespace {

void check_long_backward(LongFamily family, const char* what) {
  const char* env = std::getenv("LCSM_LONG_BACKWARD_T");
  const std::int64_t T = env ? std::atoll(env) : (1 << 18);
  const LongBackwardResult r = run_long_backward(family, T, 16, 2, fresh_seed());
  INFO(what << " backward T=" << T << " rel_rms dq " << r.dq_rel_rms << " dk " << r.dk_rel_rms << " dv " << r.dv_rel_rms
            << " (bf16 yardstick " << r.yardstick << "), d_initial_state " << r.d_initial_rel_rms << " in " << r.seconds
            << " s");
  const Verdict v = judge(r.sampled_gradients, r.sampled_reference, tolerance(Dtype::bf16, r.sampled_reference));
  INFO(v.str());
  CHECK(v.ok);
  CHECK(r.d_initial_rel_rms <= 1e-5);
  CHECK(r.decay_gradient_finite);
  WARN(what << " backward long check: rel_rms dq " << r.dq_rel_rms << " dk " << r.dk_rel_rms << " dv " << r.dv_rel_rms
            << " (yardstick " << r.yardstick << "), d_initial_state " << r.d_initial_rel_rms);
}

}  // namespace

TEST_CASE("cuda lightning backward: 256K tokens, 16 heads, D = 128 against float64 on sampled rows",
          "[cuda][long][backward]") {
  check_long_backward(LongFamily::lightning, "lightning");
}
TEST_CASE("cuda scalar gate backward: 256K tokens, 16 heads, D = 128 against float64 on sampled rows",
          "[cuda][long][backward][gated]") {
  check_long_backward(LongFamily::scalar_gate, "scalar gate");
}
TEST_CASE("cuda vector gate backward: 256K tokens, 16 heads, D = 128 against float64 on sampled rows",
          "[cuda][long][backward][gated]") {
  check_long_backward(LongFamily::vector_gate, "vector gate");
}

TEST_CASE("cuda lightning: errors", "[cuda][validation]") {
  CHECK_THAT(forward_without_workspace_message(),
             Contains("argument 'device.workspace'") && Contains("forward_workspace_bytes") && Contains("got 0 bytes"));
  CHECK_THAT(forward_with_large_key_dim_message(), Contains("K <= 256") && Contains("K = 320"));
  CHECK_THAT(backward_error_message(false), Contains("argument 'device.workspace'") &&
                                                Contains("backward_workspace_bytes") && Contains("got 0 bytes"));
  CHECK_THAT(backward_error_message(true), Contains("V <= 256") && Contains("V = 320"));
}

// The fused FFT convolution's plan needs a third less workspace than cuFFT's, so the bytes tell
// which path a call takes: automatic and fused_fft the fused one at FFT length 2^16, portable cuFFT.
TEST_CASE("cuda toeplitz: Kernels::portable sends the forward to cuFFT", "[cuda][toeplitz]") {
  const std::size_t automatic = toeplitz_forward_workspace(0), portable = toeplitz_forward_workspace(1),
                    fused = toeplitz_forward_workspace(2);
  INFO("automatic " << automatic << " portable " << portable << " fused_fft " << fused);
  CHECK(automatic == fused);
  CHECK(portable > automatic);
}

// The stage tiles' map (64 x 64 boxes, 128-byte swizzle, a batch stride): if the driver refused
// it, the sm_90a forward would fall back to cp.async everywhere, correct and slower, and no other
// test would notice.
TEST_CASE("cuda sm90: the TMA tile map encodes", "[cuda][tma]") {
  const bool keys = sm90_tile_map_encodes(1, 65536, 16, 128), batched = sm90_tile_map_encodes(2, 700, 3, 128);
  INFO("B = 1: " << keys << ", B = 2: " << batched);
  CHECK(sm90_tile_map_refuses_wide_heads());
  if (sm90_tma_loads_on()) {
    CHECK(keys);
    CHECK(batched);
  } else if (!keys || !batched) {
    WARN("the driver refuses the tile map (built with LCSM_CUDA_SM90_TMA=0, so nothing uses it)");
  }
}

// The suite checks the vector gate's results whichever kernel computes them; this checks which one
// does: typical gates stay on the sm_90a kernel, and one strong token sends the CTAs of its head's
// segment, and no other, to the mma.sync fallback.
TEST_CASE("cuda vector gate: gentle chunks stay on the sm_90a kernel, a steep one falls back", "[cuda][gated]") {
  const FallbackCount gentle = vector_gate_fallbacks(65536, 4, false);
  if (gentle.ctas < 0) {
    WARN("this device does not run the sm_90a kernels: nothing checked");
    return;
  }
  INFO("gentle: " << gentle.flagged << " of " << gentle.ctas << " CTAs fell back");
  CHECK(gentle.flagged == 0);
  const FallbackCount steep = vector_gate_fallbacks(65536, 4, true);
  INFO("one steep token: " << steep.flagged << " of " << steep.ctas << " CTAs fell back");
  CHECK(steep.flagged == 1);
}

TEST_CASE("cuda cosformer: errors", "[cuda][validation][cosformer]") {
  CHECK_THAT(cosformer_error_message("k136"), Contains("argument 'q'") && Contains("K <= 128") && Contains("K = 136"));
  CHECK_THAT(cosformer_error_message("no_length"), Contains("argument 'op.length'") && Contains("unset"));
  CHECK_THAT(cosformer_error_message("no_positions"), Contains("argument 'op.positions'") && Contains("absent"));
  CHECK_THAT(cosformer_error_message("non_causal_step"), Contains("argument 'op.causal'"));
  CHECK_THAT(cosformer_error_message("positions_shape"), Contains("argument 'op.positions'") && Contains("[2]"));
  CHECK_THAT(cosformer_error_message("short_m"), Contains("argument 'op.length'") && Contains("T = 4"));
  CHECK_THAT(cosformer_error_message("backward_v257"),
             Contains("argument 'v'") && Contains("V <= 256") && Contains("V = 257"));
  CHECK_THAT(cosformer_error_message("backward_workspace"),
             Contains("argument 'device.workspace'") && Contains("backward_workspace_bytes"));
}

// cu_seqlens in device memory is never read on the host: 2^58 sequences fit its extent check, and
// N x H x K x V state elements (times 4) then overflow int64 before any plan is made (the suite's
// arguments_test.cpp runs the shared aliasing and overflow cases on this backend too).
TEST_CASE("cuda: a sequence count whose state sizes overflow is an error", "[cuda][validation][overflow]") {
  Probe* p = backend().probe();
  REQUIRE(p != nullptr);
  ProbeCall c;
  c.family = Family::lightning;
  c.entry = Entry::forward;
  c.views["q"] = {0, {1, 4, 2, 2}, {}};
  c.views["k"] = {32, {1, 4, 2, 2}, {}};
  c.views["v"] = {64, {1, 4, 2, 3}, {}};
  c.views["o"] = {96, {1, 4, 2, 3}, {}};
  c.offsets = {0, 1, 4};
  CHECK(p->call(c, 256) == "");
  c.offsets_count = std::int64_t{1} << 58;
  CHECK_THAT(p->call(c, 256), Contains("'cu_seqlens'") && Contains("64 bits"));
}
