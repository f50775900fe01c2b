// The limits the CPU entry points enforce beyond the shared argument cases (suite/arguments_test.cpp):
// the value range of gates and decays, the thread cap, the aliasing rule for host-memory operands
// the arena probe cannot place (cosFormer's int64 positions, lightning's decay vector, the TNN MLP),
// and absent views.
#include <catch2/catch.hpp>
#include <climits>
#include <cmath>
#include <limits>
#include <vector>

#include "lcsm/lcsm.hpp"
#include "lcsm/reference/gated.hpp"
#include "lcsm/reference/lightning.hpp"

using namespace lcsm;
using Catch::Contains;

namespace {

constexpr index_t B = 1, T = 40, H = 2, K = 4, V = 3;

template <class S>
struct Inputs {
  std::vector<S> q, k, v, o, s;
  Inputs() : q(B * T * H * K), k(q.size()), v(B * T * H * V), o(v.size()), s(B * H * K * V) {
    for (std::size_t i = 0; i < q.size(); ++i) {
      q[i] = static_cast<S>(std::sin(0.7 * i));
      k[i] = static_cast<S>(std::cos(1.3 * i));
    }
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<S>(std::sin(0.3 * i + 1));
  }
  View<const S, 4> qv() const { return lcsm::view(q.data(), {B, T, H, K}); }
  View<const S, 4> kv() const { return lcsm::view(k.data(), {B, T, H, K}); }
  View<const S, 4> vv() const { return lcsm::view(v.data(), {B, T, H, V}); }
  View<S, 4> ov() { return lcsm::view(o.data(), {B, T, H, V}); }
};

double max_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}
double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

}  // namespace

// Issue 14: a double gate of -1e308 (finite, then accepted) drove the cumulative log-gate sums to
// -inf and NaN into almost every output. Gates and decays are now in [decay::min_log, 0] =
// [-1000, 0]; exp(-1000) is 0 in float and double, so nothing is lost by clamping stronger ones.
TEST_CASE("limits: gates and decays below -1000 are errors, -1000 itself is exact", "[validation][range]") {
  cpu::Device dev{2};
  Inputs<double> in;
  std::vector<double> g(B * T * H, -0.1), gv(B * T * H * K, -0.1);
  ScalarGatedAttention<double> sop;
  sop.log_gate = lcsm::view(static_cast<const double*>(g.data()), {B, T, H});
  VectorGatedAttention<double> vop;
  vop.log_gate = lcsm::view(static_cast<const double*>(gv.data()), {B, T, H, K});
  for (double bad : {-1e308, -1000.5, -std::numeric_limits<double>::max()}) {
    g[7] = bad;
    gv[13] = bad;
    CHECK_THROWS_WITH(forward<double>(dev, sop, in.qv(), in.kv(), in.vv(), in.ov()),
                      Contains("'op.log_gate'") && Contains("-1000 <= g <= 0") && Contains("lcsm::decay::min_log"));
    CHECK_THROWS_WITH(forward<double>(dev, vop, in.qv(), in.kv(), in.vv(), in.ov()),
                      Contains("'op.log_gate'") && Contains("-1000 <= g <= 0"));
    LightningAttention op;
    op.log_decay = {-0.1, bad};
    CHECK_THROWS_WITH(forward<double>(dev, op, in.qv(), in.kv(), in.vv(), in.ov()),
                      Contains("'op.log_decay'") && Contains("-1000 <= g <= 0") && Contains("g[1]"));
  }
  std::vector<float> gf(B * T * H, -0.1f);
  gf[3] = -3e38f;
  ScalarGatedAttention<float> fop;
  fop.log_gate = lcsm::view(static_cast<const float*>(gf.data()), {B, T, H});
  Inputs<float> inf;
  CHECK_THROWS_WITH(forward<float>(dev, fop, inf.qv(), inf.kv(), inf.vv(), inf.ov()), Contains("'op.log_gate'"));

  // At the floor: the outputs after a gate of -1000 see nothing before it, in float and in double.
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = i % 7 == 3 ? -1000.0 : -0.05 * static_cast<double>(i % 5);
  for (std::size_t i = 0; i < gv.size(); ++i) gv[i] = i % 11 == 5 ? -1000.0 : -0.03 * static_cast<double>(i % 4);
  for (std::size_t i = 0; i < gf.size(); ++i) gf[i] = static_cast<float>(g[i]);
  std::vector<double> ref(in.o.size()), sT(B * H * K * V);
  reference::gated_forward(sop, in.qv(), in.kv(), in.vv(), lcsm::view(ref.data(), {B, T, H, V}), {},
                           lcsm::view(sT.data(), {B, H, K, V}), {}, false);
  forward<double>(dev, sop, in.qv(), in.kv(), in.vv(), in.ov());
  INFO("scalar gate: max error " << max_diff(in.o, ref));
  CHECK(max_diff(in.o, ref) < 1e-10);
  std::vector<double> qd(inf.q.begin(), inf.q.end()), kd(inf.k.begin(), inf.k.end()), vd(inf.v.begin(), inf.v.end());
  std::vector<double> gfd(gf.begin(), gf.end());
  ScalarGatedAttention<double> sopf;
  sopf.log_gate = lcsm::view(static_cast<const double*>(gfd.data()), {B, T, H});
  reference::gated_forward(sopf, lcsm::view(static_cast<const double*>(qd.data()), {B, T, H, K}),
                           lcsm::view(static_cast<const double*>(kd.data()), {B, T, H, K}),
                           lcsm::view(static_cast<const double*>(vd.data()), {B, T, H, V}),
                           lcsm::view(ref.data(), {B, T, H, V}), {}, lcsm::view(sT.data(), {B, H, K, V}), {}, false);
  forward<float>(dev, fop, inf.qv(), inf.kv(), inf.vv(), inf.ov());
  CHECK(max_diff(inf.o, ref) < 1e-5);
  reference::gated_forward(vop, in.qv(), in.kv(), in.vv(), lcsm::view(ref.data(), {B, T, H, V}), {},
                           lcsm::view(sT.data(), {B, H, K, V}), {}, false);
  forward<double>(dev, vop, in.qv(), in.kv(), in.vv(), in.ov());
  // The vector gate's cumulative sums reach -4000 per key here: differences of them lose ~1e-12.
  INFO("vector gate: max error " << max_diff(in.o, ref));
  CHECK(max_diff(in.o, ref) < 1e-10);
  LightningAttention lop;
  lop.log_decay = {decay::min_log, -0.5};
  reference::lightning_forward(lop, in.qv(), in.kv(), in.vv(), lcsm::view(ref.data(), {B, T, H, V}), {},
                               lcsm::view(sT.data(), {B, H, K, V}), {});
  forward<double>(dev, lop, in.qv(), in.kv(), in.vv(), in.ov());
  CHECK(max_diff(in.o, ref) < 1e-12);
}

// Issue 14: a thread count of INT_MAX allocated 16 GiB of per-worker slots and aborted.
TEST_CASE("limits: thread counts are capped", "[validation][threads]") {
  CHECK(cpu::Device{INT_MAX}.thread_count() == cpu::Device::max_threads);
  CHECK(cpu::Device{3}.thread_count() == 3);
  CHECK(cpu::Device{0}.thread_count() >= 1);
  CHECK(cpu::Device{-5}.thread_count() <= cpu::Device::max_threads);
  Inputs<double> in;
  LightningAttention op;
  op.log_decay = {-0.1, -0.2};
  std::vector<double> ref(in.o.size()), sT(B * H * K * V);
  reference::lightning_forward(op, in.qv(), in.kv(), in.vv(), lcsm::view(ref.data(), {B, T, H, V}), {},
                               lcsm::view(sT.data(), {B, H, K, V}), {});
  forward<double>(cpu::Device{INT_MAX}, op, in.qv(), in.kv(), in.vv(), in.ov());
  CHECK(max_diff(in.o, ref) < 1e-12);
}

// Host-memory operands outside the probe's float arena.
TEST_CASE("limits: outputs over the descriptor's own memory are errors naming both", "[validation][aliasing]") {
  cpu::Device dev{2};
  Inputs<double> in;
  // cosFormer's positions (int64) under the output.
  std::vector<index_t> shared(B * T * H * V + 8, 0);
  CosFormerAttention cop;
  cop.positions = lcsm::view(static_cast<const index_t*>(shared.data() + 2), {B});
  CHECK_THROWS_WITH(forward<double>(dev, cop, in.qv(), in.kv(), in.vv(),
                                    lcsm::view(reinterpret_cast<double*>(shared.data()), {B, T, H, V})),
                    Contains("'o'") && Contains("'op.positions'") && Contains("disjoint"));
  // Lightning's decay vector under its gradient.
  LightningAttention lop;
  lop.log_decay = {-0.1, -0.2};
  std::vector<double> dq(in.q.size()), dk(in.k.size()), dv(in.v.size());
  CHECK_THROWS_WITH(backward<double>(dev, lop, in.qv(), in.kv(), in.vv(), in.vv(), lcsm::view(dq.data(), {B, T, H, K}),
                                     lcsm::view(dk.data(), {B, T, H, K}), lcsm::view(dv.data(), {B, T, H, V}), {},
                                     lcsm::view(lop.log_decay.data(), {H})),
                    Contains("'d_log_decay'") && Contains("'op.log_decay'") && Contains("disjoint"));
  // The TNN MLP's weights under its output.
  std::vector<float> w(64, 0.5f);
  tnn::RelativePositionMlp<float> mlp;
  mlp.layers = {{lcsm::view(static_cast<const float*>(w.data()), {4, 1}), {}},
                {lcsm::view(static_cast<const float*>(w.data() + 8), {2, 4}), {}}};
  CHECK_THROWS_WITH(tnn::coefficients(mlp, true, 8, lcsm::view(w.data() + 10, {2, 8})),
                    Contains("'out'") && Contains("'mlp.layers[1].weight'") && Contains("disjoint"));
  std::vector<float> out(16);
  CHECK_NOTHROW(tnn::coefficients(mlp, true, 8, lcsm::view(out.data(), {2, 8})));
}

// A view with null data is absent only with an extent 0: [2^32, 2^32, 1, 1] wrapped to 0 elements
// and was taken for an absent initial state.
TEST_CASE("limits: null views with no zero extent are present (and errors)", "[validation][overflow]") {
  cpu::Device dev{2};
  Inputs<float> in;
  const index_t big = index_t{1} << 32;
  LightningAttention op;
  op.log_decay = {-0.1, -0.2};
  CHECK(View<const float, 4>(nullptr, {big, big, 1, 1}, {0, 0, 0, 0}).present());
  CHECK(View<const float, 4>(nullptr, {2, 0, 2, 2}, {0, 0, 0, 0}).absent());
  CHECK(View<const float, 4>(nullptr, {big, big, 1, 1}, {0, 0, 0, 0}).numel() == std::numeric_limits<index_t>::max());
  CHECK_THROWS_WITH(forward<float>(dev, op, in.qv(), in.kv(), in.vv(), in.ov(),
                                   {View<const float, 4>(nullptr, {big, big, 1, 1}, {big, 1, 1, 1}), {}}),
                    Contains("'initial_state'") && Contains("64 bits"));
  CHECK_THROWS_WITH(forward<float>(dev, op, in.qv(), in.kv(), in.vv(), in.ov(),
                                   {View<const float, 4>(nullptr, {1, 2, 4, 3}, {24, 12, 3, 1}), {}}),
                    Contains("'initial_state'") && Contains("non-null data"));
  CHECK_THROWS_WITH(forward<float>(dev, op, in.qv(), in.kv(), in.vv(), in.ov(),
                                   {{}, View<float, 4>(in.s.data(), {1, 2, -4, 3}, {24, 12, 3, 1})}),
                    Contains("'final_state'") && Contains("extents >= 0"));
  std::vector<std::int32_t> offsets{0, 40};
  CHECK_THROWS_WITH(forward<float>(dev, op, in.qv(), in.kv(), in.vv(), in.ov(), {},
                                   CuSeqlens(View<const std::int32_t, 1>(offsets.data(), {2}, {0}))),
                    Contains("'cu_seqlens'") && Contains("stride >= 1"));
}
