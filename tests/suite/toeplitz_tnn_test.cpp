// TNN coefficients (relative-position MLP times gamma^|r|) against a hand-written evaluation, and
// a convolution with them on the backend under test.
#include <catch2/catch.hpp>
#include <cmath>

#include "lcsm/ops/tnn.hpp"
#include "suite/seeds.hpp"
#include "suite/toeplitz_problem.hpp"

using namespace lcsm;
using namespace lcsm::test;

namespace {

// 1 -> 4 -> ReLU -> 4 -> ReLU -> 3, fixed weights.
struct SmallMlp {
  std::vector<double> w1{0.5, -1.0, 2.0, 0.25}, b1{0.1, 0.2, -0.3, 0.0};
  std::vector<double> w2{1, 0, 0.5, -1, 0, 1, 1, 0, 0.5, 0.5, 0, 2, -1, 1, 1, 1}, b2{0, 0.1, 0, -0.2};
  std::vector<double> w3{1, -1, 0.5, 0, 0, 2, 1, -0.5, 0.25, 0, 0, 1}, b3{0.05, 0, -0.05};

  tnn::RelativePositionMlp<double> mlp(double gamma) const {
    tnn::RelativePositionMlp<double> m;
    m.layers = {{lcsm::view(w1.data(), {4, 1}), lcsm::view(b1.data(), {4})},
                {lcsm::view(w2.data(), {4, 4}), lcsm::view(b2.data(), {4})},
                {lcsm::view(w3.data(), {3, 4}), lcsm::view(b3.data(), {3})}};
    m.gamma = gamma;
    return m;
  }
  // The same network written out by hand.
  double at(index_t c, double p) const {
    double h1[4], h2[4];
    for (int i = 0; i < 4; ++i) h1[i] = std::max(0.0, w1[i] * p + b1[i]);
    for (int i = 0; i < 4; ++i) {
      h2[i] = b2[i];
      for (int j = 0; j < 4; ++j) h2[i] += w2[i * 4 + j] * h1[j];
      h2[i] = std::max(0.0, h2[i]);
    }
    double out = b3[c];
    for (int j = 0; j < 4; ++j) out += w3[c * 4 + j] * h2[j];
    return out;
  }
};

}  // namespace

TEST_CASE("toeplitz TNN coefficients: the MLP times gamma^|r|", "[toeplitz][tnn]") {
  const SmallMlp net;
  for (bool causal : {true, false})
    for (double gamma : {1.0, 0.9, 0.05}) {
      const index_t n = 50, count = causal ? n : 2 * n - 1;
      std::vector<double> a(3 * count);
      tnn::coefficients(net.mlp(gamma), causal, n, lcsm::view(a.data(), {3, count}));
      for (index_t c = 0; c < 3; ++c)
        for (index_t i = 0; i < count; ++i) {
          const index_t r = causal ? i : i - (n - 1);
          const double want = net.at(c, static_cast<double>(r) / n) * std::pow(gamma, std::abs(static_cast<double>(r)));
          INFO("causal=" << causal << " gamma=" << gamma << " c=" << c << " r=" << r);
          CHECK(a[c * count + i] == Approx(want).epsilon(1e-12).margin(1e-300));
        }
    }
  std::vector<double> a(3 * 10);
  auto m = net.mlp(1.5);
  CHECK_THROWS_WITH(tnn::coefficients(m, true, 10, lcsm::view(a.data(), {3, 10})),
                    Catch::Contains("argument 'mlp.gamma'") && Catch::Contains("got 1.5"));
  m.gamma = 0.5;
  CHECK_THROWS_WITH(tnn::coefficients(m, false, 10, lcsm::view(a.data(), {3, 10})),
                    Catch::Contains("argument 'out'") && Catch::Contains("[3, 19]"));
  m.layers[1].weight = lcsm::view(net.w2.data(), {4, 3});
  CHECK_THROWS_WITH(tnn::coefficients(m, true, 10, lcsm::view(a.data(), {3, 10})),
                    Catch::Contains("mlp.layers[1].weight") && Catch::Contains("[out, 4]"));
}

TEST_CASE("toeplitz forward with TNN coefficients", "[toeplitz][tnn][forward]") {
  ToeplitzOps* t = backend().toeplitz();
  if (!t) {
    WARN(backend().name() << " has no Toeplitz convolution yet: nothing checked");
    return;
  }
  const SmallMlp net;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      ToeplitzProblemData p(toeplitz_case(2, 3000, 3, causal, ToeplitzSpec::Path::fft), dt, fresh_seed());
      std::vector<double> a(p.ad.size());
      tnn::coefficients(net.mlp(0.99), causal, p.c.n, lcsm::view(a.data(), {3, p.c.coefficient_count()}));
      for (double& v : a) v = round_to(dt, v);
      p.ad = a;
      p.a.assign(a);
      const std::vector<double> ref = p.reference();
      Tensor y = p.output();
      t->forward(p.c.spec(), p.a, p.x, y, nullptr);
      const Verdict v = judge(y.to_double(), ref, toeplitz_tolerance(dt, ref));
      INFO(name(dt) << " " << p.c.str() << ": " << v.str());
      CHECK(v.ok);
    }
}
