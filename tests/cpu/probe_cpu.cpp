// The CPU runner's probe (support/probe.hpp): every entry point of every family, float, over a host
// arena.
#include <cstring>
#include <stdexcept>

#include "lcsm/lcsm.hpp"
#include "support/probe.hpp"

namespace lcsm::test {
namespace {

// The views of one call over the arena.
struct ArenaArgs {
  const ProbeCall& c;
  float* base;
  std::vector<std::int32_t> own_offsets;
  std::vector<index_t> positions;

  template <class T, int R>
  View<T, R> get(const char* name) const {
    const auto it = c.views.find(name);
    if (it == c.views.end()) return {};
    const ArenaView& a = it->second;
    if (static_cast<int>(a.shape.size()) != R || (!a.strides.empty() && static_cast<int>(a.strides.size()) != R))
      throw std::logic_error(std::string("probe: wrong rank for ") + name);
    Shape<R> shape{}, strides{};
    for (int d = 0; d < R; ++d) shape[d] = a.shape[d];
    strides = contiguous_strides<R>(shape);
    if (!a.strides.empty())
      for (int d = 0; d < R; ++d) strides[d] = a.strides[d];
    return {reinterpret_cast<T*>(base + a.offset), shape, strides};
  }
  CuSeqlens cu() const {
    if (c.offsets.empty()) return {};
    const std::int32_t* p =
        c.offsets_at >= 0 ? reinterpret_cast<const std::int32_t*>(base + c.offsets_at) : own_offsets.data();
    const index_t count = c.offsets_count >= 0 ? c.offsets_count : static_cast<index_t>(c.offsets.size());
    return CuSeqlens(View<const std::int32_t, 1>(p, {count}, {c.offsets_stride}));
  }
  index_t heads() const {  // H from q's shape, for lightning's per-head decays
    const auto it = c.views.find("q");
    return it == c.views.end() || it->second.shape.size() != 4 ? 0 : std::min<index_t>(it->second.shape[2], 64);
  }
};

class CpuProbe final : public Probe {
 public:
  explicit CpuProbe(const cpu::Device& device) : device_(device) {}
  bool supports(Family, Entry) const override { return true; }

  std::string call(const ProbeCall& c, index_t arena_floats) override {
    std::vector<float> arena(static_cast<std::size_t>(arena_floats), -0.25f);
    ArenaArgs a{c, arena.data(), {}, {}};
    for (std::size_t i = 0; i < c.offsets.size(); ++i) {
      const auto x = static_cast<std::int32_t>(c.offsets[i]);
      if (c.offsets_at >= 0) std::memcpy(arena.data() + c.offsets_at + i, &x, sizeof(x));
      else a.own_offsets.push_back(x);
    }
    a.positions.assign(c.positions.begin(), c.positions.end());
    try {
      run(a);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

 private:
  void run(const ArenaArgs& a) {
    const ProbeCall& c = a.c;
    const auto q = a.get<const float, 4>("q"), k = a.get<const float, 4>("k"), v = a.get<const float, 4>("v");
    const auto d_o = a.get<const float, 4>("do");
    const auto o = a.get<float, 4>("o"), state = a.get<float, 4>("state");
    const auto dq = a.get<float, 4>("dq"), dk = a.get<float, 4>("dk"), dv = a.get<float, 4>("dv");
    const StateIO<float> io{a.get<const float, 4>("initial_state"), a.get<float, 4>("final_state")};
    const StateGrads<float> grads{a.get<const float, 4>("initial_state"), a.get<const float, 4>("d_final_state"),
                                  a.get<float, 4>("d_initial_state")};
    const CuSeqlens cu = a.cu();
    switch (c.family) {
      case Family::lightning: {
        LightningAttention op;
        op.log_decay.assign(static_cast<std::size_t>(a.heads()), -0.1);
        if (c.entry == Entry::forward) forward<float>(device_, op, q, k, v, o, io, cu);
        else if (c.entry == Entry::step) step<float>(device_, op, q, k, v, o, state);
        else backward<float>(device_, op, q, k, v, d_o, dq, dk, dv, grads, a.get<float, 1>("d_log_decay"), cu);
        return;
      }
      case Family::scalar_gate: {
        ScalarGatedAttention<float> op;
        op.log_gate = a.get<const float, 3>("op.log_gate");
        if (c.entry == Entry::forward) forward<float>(device_, op, q, k, v, o, io, cu);
        else if (c.entry == Entry::step) step<float>(device_, op, q, k, v, o, state);
        else backward<float>(device_, op, q, k, v, d_o, dq, dk, dv, grads, a.get<float, 3>("d_log_gate"), cu);
        return;
      }
      case Family::vector_gate: {
        VectorGatedAttention<float> op;
        op.log_gate = a.get<const float, 4>("op.log_gate");
        if (c.entry == Entry::forward) forward<float>(device_, op, q, k, v, o, io, cu);
        else if (c.entry == Entry::step) step<float>(device_, op, q, k, v, o, state);
        else backward<float>(device_, op, q, k, v, d_o, dq, dk, dv, grads, a.get<float, 4>("d_log_gate"), cu);
        return;
      }
      case Family::cosformer: {
        CosFormerAttention op;
        op.length = c.length;
        if (!a.positions.empty())
          op.positions =
              lcsm::view(static_cast<const index_t*>(a.positions.data()), {static_cast<index_t>(a.positions.size())});
        if (c.entry == Entry::forward) forward<float>(device_, op, q, k, v, o, io, cu);
        else if (c.entry == Entry::step) step<float>(device_, op, q, k, v, o, state);
        else backward<float>(device_, op, q, k, v, d_o, dq, dk, dv, grads, cu);
        return;
      }
      case Family::toeplitz: {
        ToeplitzConvolution<float> op;
        op.coefficients = a.get<const float, 2>("op.coefficients");
        const auto x = a.get<const float, 3>("x");
        if (c.entry == Entry::forward) {
          forward<float>(device_, op, x, a.get<float, 3>("y"), cu);
        } else if (c.entry == Entry::step) {
          ToeplitzHistory<float> history{a.get<float, 3>("history.inputs"), c.history_position};
          step<float>(device_, op, x, a.get<float, 3>("y"), history);
        } else {
          backward<float>(device_, op, x, a.get<const float, 3>("dy"), a.get<float, 3>("dx"), a.get<float, 2>("da"),
                          cu);
        }
        return;
      }
    }
  }

  cpu::Device device_;
};

}  // namespace

Probe* cpu_probe(const cpu::Device& device) {
  static CpuProbe probe(device);
  return &probe;
}

}  // namespace lcsm::test
