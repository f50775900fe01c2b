// Uses lcsm like a consumer does: a small lightning attention forward on the CPU backend, checked
// against the float64 reference. Exit status 0 when they agree, 1 when they do not.
#include <cmath>
#include <cstdio>
#include <lcsm/lcsm.hpp>
#include <random>
#include <vector>

int main() {
  using lcsm::index_t;
  const index_t B = 2, T = 150, H = 3, K = 16, V = 8;
  lcsm::LightningAttention op;
  op.log_decay = lcsm::decay::alibi(static_cast<int>(H));

  std::mt19937 rng(42);
  std::normal_distribution<double> normal;
  std::vector<double> q(B * T * H * K), k(q.size()), v(B * T * H * V), s0(B * H * K * V);
  for (auto* x : {&q, &k, &v, &s0})
    for (double& e : *x) e = normal(rng);
  auto to_float = [](const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); };
  const std::vector<float> qf = to_float(q), kf = to_float(k), vf = to_float(v), s0f = to_float(s0);

  std::vector<float> o(B * T * H * V), sT(B * H * K * V);
  lcsm::forward<float>(lcsm::cpu::Device{2}, op, lcsm::view(qf.data(), {B, T, H, K}),
                       lcsm::view(kf.data(), {B, T, H, K}), lcsm::view(vf.data(), {B, T, H, V}),
                       lcsm::view(o.data(), {B, T, H, V}),
                       {lcsm::view(s0f.data(), {B, H, K, V}), lcsm::view(sT.data(), {B, H, K, V})});

  std::vector<double> o_ref(o.size()), sT_ref(sT.size());
  lcsm::reference::lightning_forward(
      op, lcsm::view(static_cast<const double*>(q.data()), {B, T, H, K}),
      lcsm::view(static_cast<const double*>(k.data()), {B, T, H, K}),
      lcsm::view(static_cast<const double*>(v.data()), {B, T, H, V}), lcsm::view(o_ref.data(), {B, T, H, V}),
      lcsm::view(static_cast<const double*>(s0.data()), {B, H, K, V}), lcsm::view(sT_ref.data(), {B, H, K, V}));

  auto rel_rms = [](const std::vector<float>& out, const std::vector<double>& ref) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
      num += (out[i] - ref[i]) * (out[i] - ref[i]);
      den += ref[i] * ref[i];
    }
    return std::sqrt(num / den);
  };
  const double eo = rel_rms(o, o_ref), es = rel_rms(sT, sT_ref);
  const bool ok = eo < 1e-5 && es < 1e-5;  // NaN fails
  std::printf("lcsm consumer: lightning forward vs float64 reference: o %.2e, final state %.2e: %s\n", eo, es,
              ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
}
