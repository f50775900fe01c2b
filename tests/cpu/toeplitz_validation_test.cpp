// Bad input to the Toeplitz calls: each throws lcsm::Error naming the argument, the expected and the
// actual value.
#include <catch2/catch.hpp>
#include <vector>

#include "lcsm/lcsm.hpp"

using namespace lcsm;
using Catch::Contains;

namespace {

struct ToeplitzBuffers {
  static constexpr index_t B = 2, n = 8, C = 3;
  std::vector<float> x, y, a, dx, da, history;
  ToeplitzConvolution<float> op;
  cpu::Device dev{2};
  ToeplitzBuffers()
      : x(B * n * C, 0.5f), y(x.size()), a(C * (2 * n - 1), 0.25f), dx(x.size()), da(a.size()), history(x.size()) {
    op.coefficients = lcsm::view(static_cast<const float*>(a.data()), {C, n});
  }
  View<float, 3> xv() { return lcsm::view(x.data(), {B, n, C}); }
  View<float, 3> yv() { return lcsm::view(y.data(), {B, n, C}); }
};

}  // namespace

TEST_CASE("toeplitz validation: a well-formed call runs", "[toeplitz][validation]") {
  ToeplitzBuffers b;
  CHECK_NOTHROW(forward<float>(b.dev, b.op, b.xv(), b.yv()));
  CHECK_NOTHROW(backward<float>(b.dev, b.op, b.xv(), b.yv(), lcsm::view(b.dx.data(), {2, 8, 3}),
                                lcsm::view(b.da.data(), {3, 8})));
  // n = 0 and B = 0 are empty calls, null data allowed.
  ToeplitzConvolution<float> empty;
  empty.coefficients = View<const float, 2>(nullptr, {3, 0}, {0, 1});
  CHECK_NOTHROW(
      forward<float>(b.dev, empty, lcsm::view<float>(nullptr, {2, 0, 3}), lcsm::view<float>(nullptr, {2, 0, 3})));
}

TEST_CASE("toeplitz validation: coefficient length not matching n", "[toeplitz][validation]") {
  ToeplitzBuffers b;
  b.op.coefficients = lcsm::view(static_cast<const float*>(b.a.data()), {3, 7});
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.xv(), b.yv()),
                    Contains("lcsm::forward(cpu, ToeplitzConvolution)") && Contains("argument 'op.coefficients'") &&
                        Contains("expected 8 coefficients per channel (causal: n for n = 8)") && Contains("got 7"));
  b.op.causal = false;  // bidirectional needs 2n - 1 = 15
  b.op.coefficients = lcsm::view(static_cast<const float*>(b.a.data()), {3, 8});
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, b.xv(), b.yv()),
      Contains("expected 15 coefficients per channel (bidirectional: 2n - 1 for n = 8)") && Contains("got 8"));
  CHECK_THROWS_WITH(backward<float>(b.dev, b.op, b.xv(), b.yv(), lcsm::view(b.dx.data(), {2, 8, 3}), View<float, 2>{}),
                    Contains("lcsm::backward(cpu, ToeplitzConvolution)") && Contains("expected 15 coefficients"));
  // varlen: the coefficients must cover the longest sequence.
  const std::vector<std::int64_t> offsets{0, 3, 12, 16};
  std::vector<float> packed(16 * 3), out(16 * 3);
  b.op.causal = true;
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, lcsm::view(packed.data(), {1, 16, 3}),
                                   lcsm::view(out.data(), {1, 16, 3}), CuSeqlens(offsets.data(), 4)),
                    Contains("at least 9 coefficients per channel") && Contains("n = 9") && Contains("got 8"));
}

TEST_CASE("toeplitz validation: shapes and ranks", "[toeplitz][validation]") {
  ToeplitzBuffers b;
  // C of the coefficients against C of x.
  b.op.coefficients = lcsm::view(static_cast<const float*>(b.a.data()), {2, 8});
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.xv(), b.yv()), Contains("argument 'op.coefficients'") &&
                                                                     Contains("C = 3 channels") &&
                                                                     Contains("got shape [2, 8]"));
  b.op.coefficients = lcsm::view(static_cast<const float*>(b.a.data()), {3, 8});
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.xv(), lcsm::view(b.y.data(), {2, 8, 2})),
                    Contains("argument 'y'") && Contains("expected shape [2, 8, 3]") && Contains("got [2, 8, 2]"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, lcsm::view(b.x.data(), {2, 8, 0}), lcsm::view(b.y.data(), {2, 8, 0})),
                    Contains("argument 'x'") && Contains("C >= 1"));
  CHECK_THROWS_WITH(backward<float>(b.dev, b.op, b.xv(), b.yv(), View<float, 3>{}, lcsm::view(b.da.data(), {3, 9})),
                    Contains("argument 'da'") && Contains("[3, 8]") && Contains("got [3, 9]"));
  CHECK_THROWS_WITH(
      backward<float>(b.dev, b.op, b.xv(), lcsm::view(b.y.data(), {2, 7, 3}), View<float, 3>{}, View<float, 2>{}),
      Contains("argument 'dy'") && Contains("got [2, 7, 3]"));
  // Wrong rank from a run-time-ranked tensor.
  CHECK_THROWS_WITH(view_as<3>(b.x.data(), {2, 8, 3, 1}, {}, "x"),
                    Contains("argument 'x'") && Contains("expected rank 3") && Contains("got rank 4"));
}

TEST_CASE("toeplitz validation: memory", "[toeplitz][validation]") {
  ToeplitzBuffers b;
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, lcsm::view<float>(nullptr, {2, 8, 3}), b.yv()),
      Contains("argument 'x'") && Contains("non-null data") && Contains("null data with shape [2, 8, 3]"));
  ToeplitzConvolution<float> null_coefficients = b.op;
  null_coefficients.coefficients = View<const float, 2>(nullptr, {3, 8}, {8, 1});
  CHECK_THROWS_WITH(forward<float>(b.dev, null_coefficients, b.xv(), b.yv()),
                    Contains("argument 'op.coefficients'") && Contains("null data with shape [3, 8]"));
  CHECK_THROWS_WITH(forward<float>(b.dev, b.op, b.xv(), lcsm::view(b.y.data(), {2, 8, 3}, {24, 1, 1})),
                    Contains("argument 'y'") && Contains("no two elements share memory"));
  std::vector<float> big(64, 0.0f);
  CHECK_THROWS_WITH(
      forward<float>(b.dev, b.op, lcsm::view(big.data(), {2, 8, 3}), lcsm::view(big.data() + 1, {2, 8, 3})),
      Contains("argument 'y'") && Contains("disjoint from 'x'"));
  CHECK_THROWS_WITH(
      backward<float>(b.dev, b.op, b.xv(), b.yv(), lcsm::view(b.y.data(), {2, 8, 3}), lcsm::view(b.da.data(), {3, 8})),
      Contains("argument 'dx'") && Contains("disjoint from 'dy'"));
}

TEST_CASE("toeplitz validation: decode", "[toeplitz][validation][step]") {
  ToeplitzBuffers b;
  std::vector<float> xt(2 * 3, 1.0f), yt(xt.size());
  auto x1 = lcsm::view(xt.data(), {2, 1, 3}), y1 = lcsm::view(yt.data(), {2, 1, 3});
  ToeplitzHistory<float> h{lcsm::view(b.history.data(), {2, 8, 3}), 8};
  CHECK_THROWS_WITH(step<float>(b.dev, b.op, x1, y1, h), Contains("lcsm::step(cpu, ToeplitzConvolution)") &&
                                                             Contains("argument 'history.position'") &&
                                                             Contains("history too short") && Contains("got 8"));
  h.position = 0;
  CHECK_NOTHROW(step<float>(b.dev, b.op, x1, y1, h));
  CHECK(h.position == 1);
  ToeplitzHistory<float> wrong{lcsm::view(b.history.data(), {2, 8, 2}), 0};
  CHECK_THROWS_WITH(step<float>(b.dev, b.op, x1, y1, wrong),
                    Contains("argument 'history.inputs'") && Contains("C = 3") && Contains("got [2, 8, 2]"));
  ToeplitzHistory<float> absent{};
  CHECK_THROWS_WITH(step<float>(b.dev, b.op, x1, y1, absent),
                    Contains("argument 'history.inputs'") && Contains("absent"));
  ToeplitzConvolution<float> bidirectional = b.op;
  bidirectional.causal = false;
  bidirectional.coefficients = lcsm::view(static_cast<const float*>(b.a.data()), {3, 15});
  CHECK_THROWS_WITH(step<float>(b.dev, bidirectional, x1, y1, h), Contains("argument 'op.causal'"));
  CHECK_THROWS_WITH(step<float>(b.dev, b.op, x1, lcsm::view(b.history.data() + 40, {2, 1, 3}), h),
                    Contains("argument 'y'") && Contains("disjoint from 'history.inputs'"));
}
