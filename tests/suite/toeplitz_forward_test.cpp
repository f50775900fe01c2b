// Toeplitz long convolution forward and decode on the backend under test, against the float64
// direct sums and the EOS mapping. Outputs are poisoned with NaN before each call.
#include <catch2/catch.hpp>
#include <limits>

#include "suite/seeds.hpp"
#include "suite/toeplitz_problem.hpp"

using namespace lcsm;
using namespace lcsm::test;
using Path = ToeplitzSpec::Path;

namespace {

ToeplitzOps* ops() {
  ToeplitzOps* t = backend().toeplitz();
  if (!t) WARN(backend().name() << " has no Toeplitz convolution yet: nothing checked");
  return t;
}

// Runs the case on the backend and judges y against `ref` (the direct sums of the same inputs).
void check_output(const ToeplitzProblemData& p, const std::vector<double>& ref, double slack = 1.0) {
  Tensor y = p.output();
  ops()->forward(p.c.spec(), p.a, p.x, y, p.offsets());
  const Verdict v = judge(y.to_double(), ref, toeplitz_tolerance(p.dtype, ref, slack));
  INFO(backend().name() << " " << name(p.dtype) << " " << p.c.str() << ": " << v.str());
  CHECK(v.ok);
}

// Every path of one case against one reference.
void check_paths(ToeplitzCase c, Dtype dt) {
  const std::uint64_t seed = fresh_seed();
  INFO("seed=" << seed);
  ToeplitzProblemData p(c, dt, seed);
  const std::vector<double> ref = p.reference();
  for (Path path : {Path::fft, Path::direct, Path::automatic}) {
    p.c.path = path;
    check_output(p, ref);
  }
}

}  // namespace

TEST_CASE("toeplitz forward: lengths around the FFT sizes, both paths, both forms", "[toeplitz][forward]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false})
      for (index_t n : {1, 2, 63, 64, 65, 127, 200, 1000}) check_paths(toeplitz_case(2, n, 3, causal), dt);
}

// The automatic path switches to the FFT above op.direct_max_length (bidirectional: half of it):
// the descriptor's choice, and the backend's results on both sides of thresholds from 0 to 1000.
TEST_CASE("toeplitz forward: the automatic path follows direct_max_length", "[toeplitz][forward][path]") {
  for (bool causal : {true, false})
    for (index_t d : {0, 1, 16, 48, 100}) {
      ToeplitzConvolution<double> op;
      op.causal = causal;
      op.direct_max_length = d;
      for (index_t n = 0; n <= 2 * d + 2; ++n) {
        INFO("causal=" << causal << " direct_max_length=" << d << " n=" << n);
        CHECK(op.use_fft(n) == (n > (causal ? d : d / 2)));
      }
      op.path = ToeplitzConvolution<double>::Path::direct;
      CHECK_FALSE(op.use_fft(100000));
      op.path = ToeplitzConvolution<double>::Path::fft;
      CHECK(op.use_fft(1));
    }
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false})
      for (index_t d : {0, 1, 16, 100, 1000})
        for (index_t n : {1, 2, 17, 33, 64, 200}) {
          ToeplitzCase c = toeplitz_case(2, n, 3, causal);
          c.direct_max_length = d;
          const std::uint64_t seed = fresh_seed();
          INFO("seed=" << seed);
          const ToeplitzProblemData p(c, dt, seed);
          check_output(p, p.reference());
        }
}

TEST_CASE("toeplitz forward: n = 4097 and 64 channels", "[toeplitz][forward]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      check_paths(toeplitz_case(1, 4097, 1, causal), dt);
      check_paths(toeplitz_case(2, 300, 64, causal), dt);
      ToeplitzCase decaying = toeplitz_case(1, 4097, 2, causal);
      decaying.decaying = true;  // far coefficients underflow to 0: no 0 * inf, no NaN
      check_paths(decaying, dt);
    }
}

// n > 1024 (transform length L >= 4096): the CUDA forward's fused transform (toeplitz/fused.cuh),
// whose split L = N1 x N2 and block shapes change with L: 64 x 64, 64 x 128, 128 x 128; an odd
// channel count (a pair with one channel), several sequences, varlen and strided memory.
TEST_CASE("toeplitz forward: the transform lengths of the fused GPU path", "[toeplitz][forward][fused]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      for (index_t n : {1025, 3000, 4500}) check_paths(toeplitz_case(2, n, 5, causal), dt);
      check_paths(toeplitz_varlen({1500, 3, 0, 2100}, 3, causal), dt);
      ToeplitzCase c = toeplitz_case(2, 1100, 4, causal);
      c.strided = true;
      check_paths(c, dt);
    }
}

TEST_CASE("toeplitz forward: the direct sums equal the EOS mapping", "[toeplitz][forward][eos]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      for (index_t n : {1, 2, 17, 40}) {
        const std::uint64_t seed = fresh_seed();
        const ToeplitzProblemData p(toeplitz_case(2, n, 3, causal, Path::fft), dt, seed);
        const std::vector<double> direct = p.reference(), eos = p.eos_reference();
        const Verdict v = judge(direct, eos, tolerance(Dtype::f64, eos));
        INFO(p.c.str() << " seed=" << seed << " direct vs EOS: " << v.str());
        CHECK(v.ok);
        check_output(p, eos);
      }
      const ToeplitzProblemData p(toeplitz_varlen({5, 1, 0, 12}, 2, causal, 14), dt, fresh_seed());
      const std::vector<double> direct = p.reference(), eos = p.eos_reference();
      const Verdict v = judge(direct, eos, tolerance(Dtype::f64, eos));
      INFO(p.c.str() << " direct vs EOS: " << v.str());
      CHECK(v.ok);
      check_output(p, eos);
    }
}

TEST_CASE("toeplitz forward: [B, C, n] memory through strides", "[toeplitz][forward]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      ToeplitzCase c = toeplitz_case(2, 150, 5, causal);
      c.strided = true;
      check_paths(c, dt);
    }
}

TEST_CASE("toeplitz forward: varlen sequences are convolved separately", "[toeplitz][forward][varlen]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      check_paths(toeplitz_varlen({1, 63, 700, 0, 64}, 3, causal), dt);
      check_paths(toeplitz_varlen({130, 7}, 2, causal, 800), dt);  // coefficients longer than needed
    }
}

TEST_CASE("toeplitz forward: one long sequence, sampled against the direct sum", "[toeplitz][forward][long]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      const std::uint64_t seed = fresh_seed();
      // On a GPU also n = 2^20 + 3 (L = 2^22: the fused path's longest split, 2048 x 2048).
      const index_t n = backend().name() == "cpu" ? 65536 : (1 << 20) + 3;
      const ToeplitzProblemData p(toeplitz_case(1, n, 3, causal, Path::fft), dt, seed);
      Tensor y = p.output();
      ops()->forward(p.c.spec(), p.a, p.x, y, nullptr);
      std::vector<double> got, want;
      std::mt19937_64 rng(seed);
      for (int i = 0; i < 48; ++i)
        for (index_t ch = 0; ch < p.c.C; ++ch) {
          const index_t t = i < 4 ? i * (n / 3) : static_cast<index_t>(rng() % static_cast<std::uint64_t>(n));
          got.push_back(y.get(0, t, ch, 0));
          want.push_back(reference::toeplitz_output(p.op(), p.dview(p.xd), 0, 0, p.c.n, t, ch));
        }
      const Verdict v = judge(got, want, toeplitz_tolerance(dt, want));
      INFO(name(dt) << " " << p.c.str() << " seed=" << seed << ": " << v.str());
      CHECK(v.ok);
    }
}

TEST_CASE("toeplitz decode: steps after a prefix equal one call", "[toeplitz][step][invariant]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (index_t per_step : {1, 3}) {
      const index_t B = 2, T0 = 70, total = 81, C = 5;
      const std::uint64_t seed = fresh_seed();
      INFO(name(dt) << " tokens per step " << per_step << " seed=" << seed);
      const ToeplitzProblemData p(toeplitz_case(B, total, C, true), dt, seed);
      const std::vector<double> ref = p.reference();
      // The history: the prefix built by one step of T0 tokens from position 0, the rest decoded.
      Tensor history(dt, {B, total, C, 1});
      history.poison();
      index_t position = 0;
      std::vector<double> got(B * total * C);
      for (index_t t = 0; t < total;) {
        const index_t m = t == 0 ? T0 : std::min(per_step, total - t);
        Tensor xt(dt, {B, m, C, 1}), yt(dt, {B, m, C, 1});
        xt.for_each_index(
            [&](index_t b, index_t i, index_t c, index_t) { xt.set(b, i, c, 0, p.x.get(b, t + i, c, 0)); });
        yt.poison();
        ops()->step(p.c.spec(), p.a, xt, yt, history, position);
        yt.for_each_index(
            [&](index_t b, index_t i, index_t c, index_t) { got[(b * total + t + i) * C + c] = yt.get(b, i, c, 0); });
        t += m;
        CHECK(position == t);
      }
      const Verdict v = judge(got, ref, toeplitz_tolerance(dt, ref));
      INFO(v.str());
      CHECK(v.ok);
    }
}

TEST_CASE("toeplitz forward: NaN and Inf reach exactly the outputs whose sums hold them", "[toeplitz][forward][nan]") {
  if (!ops()) return;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false})
      for (Path path : {Path::fft, Path::direct})
        for (index_t n : {300, 1500}) {  // 1500: the fused transform on a GPU (a flag spreads to a pair)
          ToeplitzCase c = toeplitz_case(2, n, 4, causal, path);
          ToeplitzProblemData p(c, dt, fresh_seed());
          const index_t s_nan = 123, r_inf = 200, center = causal ? 0 : c.n - 1;
          p.xd[(1 * c.n + s_nan) * c.C + 2] = nan;  // x[1, 123, 2]
          p.x.assign(p.xd);
          p.ad[1 * c.coefficient_count() + center + r_inf] = inf;  // a[1, r = 200]
          p.a.assign(p.ad);
          const std::vector<double> ref = p.reference();
          Tensor y = p.output();
          ops()->forward(c.spec(), p.a, p.x, y, nullptr);
          const std::vector<double> got = y.to_double();
          std::vector<double> finite_got, finite_ref;
          index_t mismatched = 0;
          for (std::size_t i = 0; i < ref.size(); ++i) {
            if (std::isfinite(ref[i])) {
              finite_got.push_back(got[i]);
              finite_ref.push_back(ref[i]);
            } else if (std::isfinite(got[i])) {
              ++mismatched;  // the reference's sum holds NaN or Inf, the backend's does not
            }
          }
          INFO(name(dt) << " " << c.str());
          CHECK(mismatched == 0);
          CHECK(finite_ref.size() < ref.size());
          // Every output the direct sum keeps finite is finite and right (no spread over the channel).
          const Verdict v = judge(finite_got, finite_ref, toeplitz_tolerance(dt, finite_ref));
          INFO(v.str());
          CHECK(v.ok);
        }
}
