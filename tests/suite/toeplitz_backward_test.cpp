// Toeplitz long convolution backward on the backend under test: dx and da against the float64
// direct formulas, the EOS reference backward through the mapping, and finite differences.
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

struct Grads {
  std::vector<double> dx, da;
};

Grads reference_grads(const ToeplitzProblemData& p, const std::vector<double>& dy, bool eos) {
  Grads g{std::vector<double>(p.xd.size()), std::vector<double>(p.ad.size())};
  auto da = lcsm::view(g.da.data(), {p.c.C, p.c.coefficient_count()});
  if (eos) reference::toeplitz_eos_backward(p.op(), p.dview(p.xd), p.dview(dy), p.mview(g.dx), da, p.cu_view());
  else reference::toeplitz_backward(p.op(), p.dview(p.xd), p.dview(dy), p.mview(g.dx), da, p.cu_view());
  return g;
}

// The backend's dx and da for dy, judged against `want`. da sums B * n products per entry: its
// tolerance scales with sqrt(B * n) (random signs), relative to ||da||.
void check_grads(const ToeplitzProblemData& p, const Tensor& dy, const Grads& want) {
  Tensor dx = p.output(), da = p.coefficient_output();
  ops()->backward(p.c.spec(), p.a, p.x, dy, &dx, &da, p.offsets());
  const Verdict vx = judge(dx.to_double(), want.dx, toeplitz_tolerance(p.dtype, want.dx, 2.0));
  const Verdict va = judge(da.to_double(), want.da, toeplitz_tolerance(p.dtype, want.da, 2.0));
  INFO(backend().name() << " " << name(p.dtype) << " " << p.c.str() << "\n dx: " << vx.str() << "\n da: " << va.str());
  CHECK(vx.ok);
  CHECK(va.ok);
}

void check_backward(ToeplitzCase c, Dtype dt, bool all_paths = true) {
  const std::uint64_t seed = fresh_seed();
  INFO("seed=" << seed);
  ToeplitzProblemData p(c, dt, seed);
  std::mt19937_64 rng(seed ^ 0xD1B54A32D192ED03ull);
  Tensor dy = p.sequence_tensor();
  const std::vector<double> dyd = normal_values(rng, dy.numel(), dt);
  dy.assign(dyd);
  const Grads want = reference_grads(p, dyd, false);
  for (Path path : {Path::fft, Path::direct, Path::automatic}) {
    if (!all_paths && path != c.path) continue;
    p.c.path = path;
    check_grads(p, dy, want);
  }
}

}  // namespace

TEST_CASE("toeplitz backward: lengths, both paths, both forms", "[toeplitz][backward]") {
  if (!ops()) return;  // every backend with the convolution has its backward (has_backward() is lightning's)
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false}) {
      for (index_t n : {1, 2, 63, 65, 200, 1000}) check_backward(toeplitz_case(2, n, 3, causal), dt);
      check_backward(toeplitz_case(1, 130, 40, causal), dt);
      ToeplitzCase strided = toeplitz_case(2, 90, 3, causal);
      strided.strided = true;
      check_backward(strided, dt);
      check_backward(toeplitz_varlen({1, 63, 300, 0, 64}, 2, causal), dt);
      check_backward(toeplitz_varlen({40, 9}, 3, causal, 70), dt);  // entries past 40 get da = 0
    }
}

TEST_CASE("toeplitz backward: the automatic path at direct_max_length from 0 to 1000", "[toeplitz][backward][path]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false})
      for (index_t d : {0, 1, 16, 100, 1000})
        for (index_t n : {2, 33, 200}) {
          ToeplitzCase c = toeplitz_case(2, n, 3, causal);
          c.direct_max_length = d;
          check_backward(c, dt, false);
        }
}

TEST_CASE("toeplitz backward: direct formulas equal the EOS reference backward", "[toeplitz][backward][eos]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (bool causal : {true, false})
      for (const ToeplitzCase& c : {toeplitz_case(2, 1, 2, causal), toeplitz_case(2, 19, 3, causal),
                                    toeplitz_varlen({6, 0, 11}, 2, causal, 13)}) {
        const std::uint64_t seed = fresh_seed();
        const ToeplitzProblemData p(c, dt, seed);
        std::mt19937_64 rng(seed + 1);
        Tensor dy = p.sequence_tensor();
        const std::vector<double> dyd = normal_values(rng, dy.numel(), dt);
        dy.assign(dyd);
        const Grads direct = reference_grads(p, dyd, false), eos = reference_grads(p, dyd, true);
        const Verdict vx = judge(direct.dx, eos.dx, tolerance(Dtype::f64, eos.dx));
        const Verdict va = judge(direct.da, eos.da, tolerance(Dtype::f64, eos.da));
        INFO(c.str() << " seed=" << seed << " direct vs EOS: dx " << vx.str() << " da " << va.str());
        CHECK(vx.ok);
        CHECK(va.ok);
        check_grads(p, dy, eos);
      }
}

TEST_CASE("toeplitz backward: finite differences of <dy, y>", "[toeplitz][backward][fd]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes()) {
    if (dt != Dtype::f64) continue;  // central differences need float64 outputs
    for (bool causal : {true, false})
      for (Path path : {Path::fft, Path::direct}) {
        ToeplitzCase c = toeplitz_case(2, 7, 2, causal, path);
        const std::uint64_t seed = fresh_seed();
        INFO(c.str() << " seed=" << seed);
        ToeplitzProblemData p(c, dt, seed);
        std::mt19937_64 rng(seed + 7);
        Tensor dy = p.sequence_tensor();
        const std::vector<double> dyd = normal_values(rng, dy.numel(), dt);
        dy.assign(dyd);
        Tensor dx = p.output(), da = p.coefficient_output();
        ops()->backward(c.spec(), p.a, p.x, dy, &dx, &da, nullptr);
        auto loss = [&] {
          Tensor y = p.output();
          ops()->forward(c.spec(), p.a, p.x, y, nullptr);
          const std::vector<double> yd = y.to_double();
          double l = 0;
          for (std::size_t i = 0; i < yd.size(); ++i) l += yd[i] * dyd[i];
          return l;
        };
        const double h = 1e-5;
        auto fd = [&](std::vector<double>& v, Tensor& t, std::size_t i) {
          const double keep = v[i];
          v[i] = keep + h;
          t.assign(v);
          const double up = loss();
          v[i] = keep - h;
          t.assign(v);
          const double down = loss();
          v[i] = keep;
          t.assign(v);
          return (up - down) / (2 * h);
        };
        const std::vector<double> got_dx = dx.to_double(), got_da = da.to_double();
        for (std::size_t i = 0; i < p.xd.size(); ++i) CHECK(got_dx[i] == Approx(fd(p.xd, p.x, i)).margin(1e-7));
        for (std::size_t i = 0; i < p.ad.size(); ++i) CHECK(got_da[i] == Approx(fd(p.ad, p.a, i)).margin(1e-7));
      }
  }
}

TEST_CASE("toeplitz backward: NaN in dy reaches only the gradients whose sums hold it", "[toeplitz][backward][nan]") {
  if (!ops()) return;
  for (Dtype dt : backend().dtypes())
    for (Path path : {Path::fft, Path::direct}) {
      ToeplitzCase c = toeplitz_case(2, 200, 3, true, path);
      const std::uint64_t seed = fresh_seed();
      ToeplitzProblemData p(c, dt, seed);
      std::mt19937_64 rng(seed + 3);
      std::vector<double> dyd = normal_values(rng, p.xd.size(), dt);
      dyd[(0 * c.n + 150) * c.C + 1] = std::numeric_limits<double>::quiet_NaN();  // dy[0, 150, 1]
      Tensor dy = p.sequence_tensor();
      dy.assign(dyd);
      const Grads want = reference_grads(p, dyd, false);
      Tensor dx = p.output(), da = p.coefficient_output();
      ops()->backward(c.spec(), p.a, p.x, dy, &dx, &da, nullptr);
      const std::vector<double> got_dx = dx.to_double(), got_da = da.to_double();
      for (const auto& [got, ref] : {std::make_pair(&got_dx, &want.dx), std::make_pair(&got_da, &want.da)}) {
        std::vector<double> fg, fr;
        index_t nonfinite = 0, mismatched = 0;
        for (std::size_t i = 0; i < ref->size(); ++i) {
          if (std::isfinite((*ref)[i])) {
            fg.push_back((*got)[i]);
            fr.push_back((*ref)[i]);
          } else {
            ++nonfinite;
            mismatched += std::isfinite((*got)[i]);
          }
        }
        const Verdict v = judge(fg, fr, toeplitz_tolerance(dt, fr, 2.0));
        INFO(name(dt) << " " << c.str() << " seed=" << seed << ": " << v.str());
        CHECK(nonfinite > 0);
        CHECK(mismatched == 0);
        CHECK(v.ok);
      }
    }
}
