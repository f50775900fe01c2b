// More than two segments per sequence: the suite runs on the CPU backend's default 2 threads, so a
// single head is cut into at most two segments there. Here every chunked family (lightning, both
// gates, cosFormer causal and not) runs forward and backward, in double, with 3, 5 and 8 threads,
// on one long head and on a varlen batch, against the same calls on one thread (no segments). A
// scan step that is wrong only from the third segment on is caught here and nowhere else.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "lcsm/lcsm.hpp"

using namespace lcsm;

namespace {

constexpr index_t K = 16, V = 12;

struct Problem {
  index_t B, T, H;
  std::vector<index_t> lengths;  // varlen (B = 1), empty otherwise
  std::vector<double> q, k, v, d_o, s0, ds, g, gv;
  std::vector<std::int64_t> offsets;
  Problem(index_t b, index_t t, index_t h, std::vector<index_t> l, std::uint64_t seed)
      : B(b), T(t), H(h), lengths(std::move(l)) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> n01;
    std::uniform_real_distribution<double> u(-0.05, 0.0);
    auto fill = [&](std::vector<double>& x, index_t n) {
      x.resize(static_cast<std::size_t>(n));
      for (auto& y : x) y = n01(rng);
    };
    fill(q, B * T * H * K);
    fill(k, B * T * H * K);
    fill(v, B * T * H * V);
    fill(d_o, B * T * H * V);
    fill(s0, N() * H * 2 * K * (V + 1));  // large enough for cosFormer's [N, H, 2K, V + 1]
    fill(ds, N() * H * 2 * K * (V + 1));
    for (std::size_t i = K * (V + 1) - 1; i < s0.size(); i += V + 1) s0[i] = 1.0 + std::fabs(s0[i]);
    g.resize(static_cast<std::size_t>(B * T * H));
    gv.resize(static_cast<std::size_t>(B * T * H * K));
    for (auto& y : g) y = u(rng);
    for (auto& y : gv) y = u(rng);
    if (!lengths.empty()) {
      offsets.push_back(0);
      for (index_t n : lengths) offsets.push_back(offsets.back() + n);
    }
  }
  index_t N() const { return lengths.empty() ? B : static_cast<index_t>(lengths.size()); }
  CuSeqlens cu() const {
    return offsets.empty() ? CuSeqlens{} : CuSeqlens(offsets.data(), static_cast<index_t>(offsets.size()));
  }
  View<const double, 4> in(const std::vector<double>& x, index_t D) const { return lcsm::view(x.data(), {B, T, H, D}); }
};

// Every output of one family's forward and backward, concatenated.
std::vector<double> run(const std::string& family, const Problem& p, int threads) {
  const cpu::Device dev{threads};
  const index_t B = p.B, T = p.T, H = p.H, N = p.N();
  const bool cos = family.rfind("cosformer", 0) == 0;
  const Shape<4> ss = cos ? Shape<4>{N, H, 2 * K, V + 1} : Shape<4>{N, H, K, V};
  const View<const double, 4> s0(p.s0.data(), ss, contiguous_strides<4>(ss)),
      ds(p.ds.data(), ss, contiguous_strides<4>(ss));
  std::vector<double> o(B * T * H * V), sT(p.s0.size()), dq(B * T * H * K), dk(dq.size()), dv(o.size()),
      ds0(p.s0.size()), dg(p.gv.size());
  const View<double, 4> sTv(sT.data(), ss, contiguous_strides<4>(ss)), ds0v(ds0.data(), ss, contiguous_strides<4>(ss));
  auto out4 = [&](std::vector<double>& x, index_t D) { return lcsm::view(x.data(), {B, T, H, D}); };
  const auto q = p.in(p.q, K), k = p.in(p.k, K), v = p.in(p.v, V), d_o = p.in(p.d_o, V);
  const StateGrads<double> grads{s0, ds, ds0v};
  if (family == "lightning") {
    LightningAttention op;
    op.log_decay.assign(static_cast<std::size_t>(H), -0.01);
    forward<double>(dev, op, q, k, v, out4(o, V), {s0, sTv}, p.cu());
    backward<double>(dev, op, q, k, v, d_o, out4(dq, K), out4(dk, K), out4(dv, V), grads, lcsm::view(dg.data(), {H}),
                     p.cu());
  } else if (family == "scalar gate") {
    ScalarGatedAttention<double> op;
    op.log_gate = lcsm::view(p.g.data(), {B, T, H});
    forward<double>(dev, op, q, k, v, out4(o, V), {s0, sTv}, p.cu());
    backward<double>(dev, op, q, k, v, d_o, out4(dq, K), out4(dk, K), out4(dv, V), grads,
                     lcsm::view(dg.data(), {B, T, H}), p.cu());
  } else if (family == "vector gate") {
    VectorGatedAttention<double> op;
    op.log_gate = lcsm::view(p.gv.data(), {B, T, H, K});
    forward<double>(dev, op, q, k, v, out4(o, V), {s0, sTv}, p.cu());
    backward<double>(dev, op, q, k, v, d_o, out4(dq, K), out4(dk, K), out4(dv, V), grads,
                     lcsm::view(dg.data(), {B, T, H, K}), p.cu());
  } else {
    CosFormerAttention op;
    op.causal = family == "cosformer causal";
    forward<double>(dev, op, q, k, v, out4(o, V), {s0, sTv}, p.cu());
    backward<double>(dev, op, q, k, v, d_o, out4(dq, K), out4(dk, K), out4(dv, V), grads, p.cu());
  }
  std::vector<double> all;
  for (const auto* x : {&o, &sT, &dq, &dk, &dv, &ds0, &dg}) all.insert(all.end(), x->begin(), x->end());
  return all;
}

}  // namespace

TEST_CASE("segments: 3, 5 and 8 threads cut one head into as many segments, every family",
          "[threads][segments][long]") {
  // The plan really cuts: 2600 tokens of one head in 64-token chunks give 8 segments on 8 threads.
  const auto plan = cpu::detail::plan_segments(Sequences(1, 2600, {}), 1, 64, 8);
  REQUIRE(plan[0].size() == 9);
  const std::uint64_t seed = Catch::rngSeed();
  const Problem one(1, 2600, 1, {}, seed), varlen(1, 2600, 1, {1300, 1, 1299}, seed + 1);
  for (const char* family : {"lightning", "scalar gate", "vector gate", "cosformer causal", "cosformer non-causal"})
    for (const Problem* p : {&one, &varlen}) {
      const std::vector<double> want = run(family, *p, 1);
      for (int threads : {3, 5, 8}) {
        const std::vector<double> got = run(family, *p, threads);
        double num = 0, den = 0;
        for (std::size_t i = 0; i < want.size(); ++i) {
          num += (got[i] - want[i]) * (got[i] - want[i]);
          den += want[i] * want[i];
        }
        INFO(family << (p->lengths.empty() ? "" : " varlen") << " threads=" << threads
                    << " rel_rms=" << std::sqrt(num / den));
        CHECK(std::sqrt(num / den) < 1e-11);
      }
    }
}
